"""The prediction API in process (TestClient, lifespan and all) serving a model from a folder:
answers, bad input, limits, the OpenAPI document, what each prediction records, following a
new version and refusing a broken one. Every test with `client` runs through the ASGI fast
path and through FastAPI's routes."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from iris_api.app import create_app
from iris_api.follower import ModelFollower
from iris_api.settings import ApiSettings
from iris_api.sources import MODEL_FILE
from iris_core import CLASS_NAMES, EXAMPLES, FEATURES, MEASUREMENT_MAX_CM
from iris_testing.models import OnnxModel, put_version
from tests.api.conftest import api_settings

SETOSA = dict(zip(FEATURES, EXAMPLES["Iris-setosa"], strict=True))
JSON = {"content-type": "application/json"}


def test_predict_answers_with_class_probabilities_and_version(client: TestClient) -> None:
    answer = client.post("/predict", json=SETOSA)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["class_name"] == "Iris-setosa"
    assert body["class_index"] == 0
    assert list(body["probabilities"]) == list(CLASS_NAMES)
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert body["model_version"] == "1"


def test_batch_answers_row_by_row_like_single_predictions(client: TestClient) -> None:
    rows = [dict(zip(FEATURES, values, strict=True)) for values in EXAMPLES.values()]
    batch = client.post("/predict/batch", json={"instances": rows})
    assert batch.status_code == 200, batch.text
    singles = [client.post("/predict", json=row).json() for row in rows]
    for one, single in zip(batch.json()["predictions"], singles, strict=True):
        assert one == {k: v for k, v in single.items() if k != "model_version"}


def _loc(answer: Any) -> list[list[Any]]:
    return [e["loc"] for e in answer.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        (
            {k: v for k, v in SETOSA.items() if k != "petal_width"},
            ["body", "petal_width"],
            "missing",
        ),
        (SETOSA | {"sepal_length": "5.1"}, ["body", "sepal_length"], "float_type"),
        (SETOSA | {"sepal_width": -1.0}, ["body", "sepal_width"], "greater_than"),
        (SETOSA | {"petal_length": 0}, ["body", "petal_length"], "greater_than"),
        (
            SETOSA | {"petal_length": MEASUREMENT_MAX_CM + 0.1},
            ["body", "petal_length"],
            "less_than_equal",
        ),
        (SETOSA | {"sepal_length": True}, ["body", "sepal_length"], "float_type"),
        (SETOSA | {"sepal_length": None}, ["body", "sepal_length"], "float_type"),
        (SETOSA | {"colour": "blue"}, ["body", "colour"], "extra_forbidden"),
        ([SETOSA], ["body"], "model_type"),
    ],
    ids=["missing", "string", "negative", "zero", "absurd", "bool", "null", "extra", "list"],
)
def test_bad_measurements_get_422_naming_the_field(
    client: TestClient, body: Any, loc: list[str], kind: str
) -> None:
    answer = client.post("/predict", json=body)
    assert answer.status_code == 422
    assert [loc] == _loc(answer)
    assert answer.json()["detail"][0]["type"] == kind


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_get_422(client: TestClient, literal: str) -> None:
    raw = json.dumps(SETOSA).replace("0.2", literal)
    answer = client.post("/predict", content=raw, headers=JSON)
    assert answer.status_code == 422, answer.text
    assert _loc(answer) == [["body", "petal_width"]]


def test_malformed_json_and_wrong_content_type_get_clear_4xx(client: TestClient) -> None:
    broken = client.post("/predict", content=b'{"sepal_length": 5.1', headers=JSON)
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid"
    form = client.post("/predict", data={"sepal_length": "5.1"})
    assert form.status_code == 415
    assert "application/json" in form.json()["detail"]
    empty = client.post("/predict", content=b"", headers=JSON)
    assert empty.status_code == 422


def test_an_oversized_body_is_refused_with_413(client: TestClient) -> None:
    huge = b'{"sepal_length": ' + b" " * (2 * 2**20) + b"5.1}"
    assert client.post("/predict", content=huge, headers=JSON).status_code == 413
    # Without Content-Length (chunked), the body is counted as it arrives.
    chunks = iter([b" " * 2**20, b" " * 2**20])
    assert client.post("/predict", content=chunks, headers=JSON).status_code == 413


def test_batch_limits(client: TestClient) -> None:
    over = client.post("/predict/batch", json={"instances": [SETOSA] * 6})  # limit 5 here
    assert over.status_code == 422
    assert over.json()["detail"][0]["type"] == "too_long"
    assert _loc(over) == [["body", "instances"]]
    assert client.post("/predict/batch", json={"instances": []}).status_code == 422
    bad_row = client.post(
        "/predict/batch", json={"instances": [SETOSA, SETOSA | {"petal_width": -1}]}
    )
    assert _loc(bad_row) == [["body", "instances", 1, "petal_width"]]


def test_model_endpoint_names_the_served_version(client: TestClient, onnx_model: OnnxModel) -> None:
    info = client.get("/model").json()
    assert info["name"] == ApiSettings().model_name
    assert (info["version"], info["alias"], info["run_id"]) == ("1", "newest", "")
    assert info["test_accuracy"] == pytest.approx(onnx_model.test_accuracy, abs=1e-4)
    assert info["loaded_at"].endswith("Z")


def _tensor(rows: list[Any], **overrides: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}
    return {"inputs": [tensor | overrides]}


def test_open_inference_protocol(client: TestClient) -> None:
    version = "1"
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json()["ready"] is True
    assert client.get("/v2/models/iris/ready").status_code == 200
    assert client.get("/v2").json()["name"] == "iris-api"
    meta = client.get("/v2/models/iris").json()
    assert meta["versions"] == [version]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]

    rows = [list(v) for v in EXAMPLES.values()]
    nested = client.post("/v2/models/iris/infer", json=_tensor(rows) | {"id": "abc"})
    assert nested.status_code == 200, nested.text
    body = nested.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", version, "abc")
    label, probabilities = body["outputs"]
    assert label["name"] == "label"
    assert label["datatype"] == "INT64"
    assert label["shape"] == [3]
    assert probabilities["shape"] == [3, 3]
    assert len(probabilities["data"]) == 9
    flat = client.post(
        "/v2/models/iris/infer", json=_tensor([x for r in rows for x in r], shape=[3, 4])
    )
    assert flat.json()["outputs"] == body["outputs"]
    only = client.post(
        "/v2/models/iris/infer", json=_tensor(rows) | {"outputs": [{"name": "probabilities"}]}
    )
    assert [o["name"] for o in only.json()["outputs"]] == ["probabilities"]


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"shape": [2, 4]}, ["body", "inputs", 0, "data"]),  # 3 rows sent
        ({"shape": [3, 3]}, ["body", "inputs", 0, "shape", 1]),
        ({"shape": [6, 4]}, ["body", "inputs", 0, "shape", 0]),  # over the batch limit
        ({"datatype": "INT32"}, ["body", "inputs", 0, "datatype"]),
        ({"data": [[5.1, 3.5, 1.4, "x"]] * 3}, ["body", "inputs", 0, "data", 3]),
    ],
    ids=["data-vs-shape", "width", "too-many-rows", "datatype", "string"],
)
def test_open_inference_protocol_bad_tensors(
    client: TestClient, overrides: dict[str, Any], loc: list[Any]
) -> None:
    rows = [list(v) for v in EXAMPLES.values()]
    body = _tensor(rows, **overrides)
    if overrides.get("shape") == [6, 4]:
        body["inputs"][0]["data"] = rows * 2
    answer = client.post("/v2/models/iris/infer", json=body)
    assert answer.status_code == 422, answer.text
    assert loc in _loc(answer)
    # The protocol's error shape, for its clients: one string naming the field.
    assert ".".join(str(part) for part in loc[1:]) in answer.json()["error"]


def test_docs_examples_are_rows_of_the_test_set(data_dir: Path, client: TestClient) -> None:
    with (data_dir / "test.csv").open() as f:
        test_set = {
            (tuple(float(x) for x in row[:4]), CLASS_NAMES[int(row[4])]) for row in csv.reader(f)
        }
    assert {(values, name) for name, values in EXAMPLES.items()} <= test_set
    spec = client.get("/openapi.json").json()
    examples = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert [e["value"] for e in examples["examples"].values()] == [
        dict(zip(FEATURES, values, strict=True)) for values in EXAMPLES.values()
    ]
    assert "PredictInput" in spec["components"]["schemas"]
    # Swagger UI from the service itself: the page works without reaching a CDN.
    page = client.get("/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in page
    assert "cdn" not in page
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_without_a_model_not_ready_names_the_reason(tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path, poll_interval_s=60))
    with TestClient(app) as client:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert f"no <version>/model.onnx in {tmp_path}" in ready.json()["reason"]
        answer = client.post("/predict", json=SETOSA)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "60"
        assert str(tmp_path) in answer.json()["detail"]
        assert client.get("/v2/health/live").status_code == 200
        assert "iris_model_loaded 0.0" in client.get("/metrics").text


def test_a_new_version_is_followed_without_a_failed_request_and_a_broken_one_refused(
    tmp_path: Path, onnx_model: OnnxModel
) -> None:
    """Predictions go on while version 2 lands in the folder: every answer 200, the switch
    within the poll interval, never back; version 3, whose file onnxruntime cannot read, is
    refused and counted, and version 2 keeps serving."""
    put_version(tmp_path, 1, onnx_model)
    app = create_app(api_settings(tmp_path, poll_interval_s=0.1))
    with TestClient(app) as client:
        seen: list[str] = []
        failed: list[int] = []
        stop = threading.Event()

        def ask() -> None:
            while not stop.is_set():
                answer = client.post("/predict", json=SETOSA)
                if answer.status_code != 200:
                    failed.append(answer.status_code)
                else:
                    seen.append(answer.json()["model_version"])

        asking = threading.Thread(target=ask)
        asking.start()
        try:
            time.sleep(0.3)
            put_version(tmp_path, 2, onnx_model)
            landed = time.monotonic()
            while "2" not in seen[-5:]:
                assert time.monotonic() - landed < 5, "version 2 was not followed"
                time.sleep(0.05)
            (tmp_path / ".3.partial").mkdir()
            (tmp_path / ".3.partial" / MODEL_FILE).write_bytes(b"not a model")
            (tmp_path / ".3.partial").rename(tmp_path / "3")
            deadline = time.monotonic() + 5
            while 'iris_model_reloads_total{result="failure"} 0.0' in client.get("/metrics").text:
                assert time.monotonic() < deadline, "the broken version was not refused"
                time.sleep(0.05)
            time.sleep(0.3)  # a few more answers after the refusal
        finally:
            stop.set()
            asking.join()
        assert failed == []
        first_two = seen.index("2")
        assert set(seen[:first_two]) == {"1"}
        assert set(seen[first_two:]) == {"2"}  # never back, never the broken one
        assert client.get("/v2/health/ready").status_code == 200
        assert 'iris_model_reloads_total{result="success"} 2.0' in client.get("/metrics").text
        shutil.rmtree(tmp_path / "3")


def test_bad_settings_name_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError  # noqa: PLC0415

    from iris_api.settings import describe  # noqa: PLC0415

    monkeypatch.setenv("IRIS_API_POLL_INTERVAL_S", "0")
    monkeypatch.setenv("IRIS_API_BATCH_LIMIT", "many")
    with pytest.raises(ValidationError) as e:
        ApiSettings()
    text = describe(e.value)
    assert "IRIS_API_POLL_INTERVAL_S: Input should be greater than 0" in text
    assert "IRIS_API_BATCH_LIMIT: Input should be a valid integer" in text


def test_suggest_is_documented_with_its_answers_and_examples(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/suggest"]["post"]
    assert {"202", "401", "403", "409", "415", "422", "429", "503"} <= set(operation["responses"])
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert {e["value"]["class_name"] for e in examples.values()} == set(CLASS_NAMES)
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SuggestInput"]
    assert schema["properties"]["class_name"]["enum"] == list(CLASS_NAMES)


def test_suggest_without_a_feedback_store_is_refused_with_503_and_counted(
    client: TestClient,
) -> None:
    """No store configured: nothing can be stored, so nothing is accepted (503 naming the
    setting, Retry-After) and the refusal is counted. tests/finetune/test_feedback.py has real stores."""
    before = _sample(client, "iris_feedback_failures_total")
    answer = client.post("/suggest", json=SETOSA | {"class_name": "Iris-setosa"})
    assert answer.status_code == 503
    assert answer.json()["detail"] == (
        "feedback not accepted: no feedback store configured (IRIS_FEEDBACK_STORE_URL)"
    )
    assert answer.headers["retry-after"] == "5"
    assert _sample(client, "iris_feedback_failures_total") == before + 1
    assert 'iris_feedback_total{class_name="Iris-setosa",model_agreed="true"} 0.0' in (
        client.get("/metrics").text
    )


def test_suggest_refuses_a_body_that_is_not_json(client: TestClient) -> None:
    answer = client.post("/suggest", content=b"x", headers={"content-type": "text/plain"})
    assert answer.status_code == 415


def _sample(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


#: What a prediction records, summed over labels: per row, per call, per feature.
RECORDED = (
    "predicted_class_name_total",
    "iris_prediction_confidence_count",
    "iris_inference_duration_seconds_count",
    "iris_input_cm_count",
    "iris_input_drift_window_rows",
)


def _recorded(client: TestClient) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name in RECORDED:
                totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals


_ROWS = [list(v) for v in EXAMPLES.values()]
_FLOWERS = [dict(zip(FEATURES, row, strict=True)) for row in _ROWS]
ENTRIES: dict[str, tuple[str, Any, int]] = {
    "predict": ("/predict", SETOSA, 1),
    "batch": ("/predict/batch", {"instances": _FLOWERS}, 3),
    "v2-infer": ("/v2/models/iris/infer", _tensor(_ROWS), 3),
    "suggest": ("/suggest", SETOSA | {"class_name": "Iris-versicolor"}, 0),  # asks, not counted
}


@pytest.mark.parametrize(("path", "body", "rows"), ENTRIES.values(), ids=ENTRIES)
def test_every_prediction_entry_records_each_row_once_and_suggest_none(
    client: TestClient, path: str, body: Any, rows: int
) -> None:
    before = _recorded(client)
    client.post(path, json=body)
    after = _recorded(client)
    assert {name: after[name] - before[name] for name in RECORDED} == {
        "predicted_class_name_total": rows,
        "iris_prediction_confidence_count": rows,
        "iris_inference_duration_seconds_count": 1 if rows else 0,  # one model call
        "iris_input_cm_count": rows * len(FEATURES),
        # The window fills only on the served model's reference bins, set at its load.
        "iris_input_drift_window_rows": rows,
    }


def test_the_follower_points_the_drift_monitor_at_the_model_it_swaps_in(
    client: TestClient,
) -> None:
    app = cast(FastAPI, client.app)
    follower: ModelFollower = app.state.follower
    monitor = app.state.metrics.drift
    served = follower.current
    assert served is not None
    assert served.reference is not None
    assert monitor.reference == served.reference
    try:
        follower.swap(dataclasses.replace(served, reference=None))
        assert monitor.reference is None  # before any request
        assert client.post("/predict", json=SETOSA).status_code == 200
        assert monitor.reference is None
    finally:
        follower.swap(served)
    assert monitor.reference == served.reference


def test_without_input_monitoring_predictions_are_still_counted(model_dir: Path) -> None:
    with TestClient(create_app(api_settings(model_dir, input_monitoring=False))) as client:
        assert client.post("/predict", json=SETOSA).status_code == 200
        assert client.post("/v2/models/iris/infer", json=_tensor(_ROWS)).status_code == 200
        assert _recorded(client) == {
            "predicted_class_name_total": 4,
            "iris_prediction_confidence_count": 4,
            "iris_inference_duration_seconds_count": 2,
        }


@pytest.mark.parametrize(
    ("body", "path", "loc"),
    [
        # found by schemathesis: orjson cannot write integers beyond 64 bits
        (
            {"instances": [5, -16111163446138818747432960]},
            "/predict/batch",
            ["body", "instances", 1],
        ),
        (SETOSA | {"sepal_width": 10**30}, "/predict", ["body", "sepal_width"]),
    ],
)
def test_huge_integers_are_a_422_not_a_500(
    client: TestClient, body: dict[str, Any], path: str, loc: list[Any]
) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert loc in _loc(answer)


@pytest.mark.parametrize("literal", ["1e-300", "1e-46"])
def test_a_measurement_that_is_0_in_float32_is_refused_like_a_0(
    client: TestClient, literal: str
) -> None:
    """The schema checks float64 (1e-300 > 0); the models take float32, where it is 0. The
    check after the cast refuses it, as a 0 sent as binary data is (tests/api/test_v2.py)."""
    raw = json.dumps(SETOSA).replace("1.4", literal)
    answer = client.post("/predict", content=raw, headers=JSON)
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["body", "petal_length"], "greater_than")
    rows = '{"instances": [' + json.dumps(SETOSA) + ", " + raw + "]}"
    batch = client.post("/predict/batch", content=rows, headers=JSON)
    assert _loc(batch) == [["body", "instances", 1, "petal_length"]]
