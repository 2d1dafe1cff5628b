"""The Open Inference Protocol (KServe V2) in process, by raw HTTP, serving a model from a
folder, every case through the ASGI fast path and through the FastAPI routes: every endpoint
with and without `/versions/{v}`, the binary tensor data extension both ways, classification,
statistics (an older version's too), repository, ragged rows and float32 limits, and the
protocol's `{"error": "..."}` on every answer under /v2 that is not a 2xx. Standard clients
talk to a real server in tests/api/test_v2_clients.py."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from iris_api.app import create_app
from iris_api.follower import ModelFollower
from iris_core import CLASS_NAMES, EXAMPLES
from iris_testing.models import OnnxModel, put_version
from tests.api.conftest import api_settings

ROWS = [list(v) for v in EXAMPLES.values()]
INFER = "/v2/models/iris/infer"
HEADER_LENGTH = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def version() -> str:
    return "1"  # the one version of the folder served


def tensor(rows: list[Any], **overrides: Any) -> dict[str, Any]:
    return {"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": rows} | overrides


def binary_request(
    rows: list[list[float]], outputs: list[dict[str, Any]] | None = None, **extra: Any
) -> tuple[bytes, dict[str, str]]:
    """A binary tensor data request as the protocol frames it: JSON, then the FP32 bytes."""
    data = np.asarray(rows, dtype="<f4").tobytes()
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "input",
                "shape": [len(rows), 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(data)},
            }
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    head = json.dumps(header | extra).encode()
    headers = {HEADER_LENGTH: str(len(head)), "content-type": "application/octet-stream"}
    return head + data, headers


def binary_outputs(answer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON of a binary answer and its outputs as arrays, read by the framing."""
    length = int(answer.headers[HEADER_LENGTH])
    head = json.loads(answer.content[:length])
    rest = answer.content[length:]
    arrays = {}
    for output in head["outputs"]:
        if "data" in output:
            continue
        size = output["parameters"]["binary_data_size"]
        chunk, rest = rest[:size], rest[size:]
        if output["datatype"] == "BYTES":
            items = []
            while chunk:
                (n,) = struct.unpack("<I", chunk[:4])
                items.append(chunk[4 : 4 + n].decode())
                chunk = chunk[4 + n :]
            arrays[output["name"]] = np.array(items).reshape(output["shape"])
        else:
            dtype = {"INT64": "<i8", "FP32": "<f4"}[output["datatype"]]
            arrays[output["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(output["shape"])
    assert rest == b""
    return head, arrays


def test_server_and_model_metadata_with_and_without_the_version(
    client: TestClient, version: str
) -> None:
    server = client.get("/v2").json()
    assert server["name"] == "iris-api"
    assert set(server["extensions"]) == {
        "binary_tensor_data", "classification", "model_configuration", "model_repository",
        "statistics",
    }  # fmt: skip
    for base in ("/v2/models/iris", f"/v2/models/iris/versions/{version}"):
        meta = client.get(base).json()
        assert meta["name"] == "iris"
        assert meta["versions"] == [version]
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
        assert client.get(f"{base}/ready").json() == {"name": "iris", "ready": True}
        config = client.get(f"{base}/config").json()
        assert config["name"] == "iris"
        assert config["max_batch_size"] == 5
        assert config["input"][0]["dims"] == [4]
        assert config["version_policy"] == {"specific": {"versions": [version]}}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_infer_json_with_and_without_content_type_and_version(
    client: TestClient, version: str
) -> None:
    body = {"id": "r1", "inputs": [tensor(ROWS)]}
    answers = [
        client.post(INFER, json=body),
        client.post(INFER, content=json.dumps(body)),  # no Content-Type: JSON
        client.post(f"/v2/models/iris/versions/{version}/infer", json=body),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
    first = answers[0].json()
    assert all(a.json() == first for a in answers)
    assert (first["model_name"], first["model_version"], first["id"]) == ("iris", version, "r1")
    label, probabilities = first["outputs"]
    assert label == {"name": "label", "shape": [3], "datatype": "INT64", "data": [0, 1, 2]}
    assert probabilities["shape"] == [3, 3]
    assert "id" not in client.post(INFER, json={"inputs": [tensor(ROWS)]}).json()


def test_binary_both_ways_equals_json(client: TestClient) -> None:
    as_json = client.post(INFER, json={"inputs": [tensor(ROWS)]}).json()["outputs"]
    content, headers = binary_request(ROWS, parameters={"binary_data_output": True})
    answer = client.post(INFER, content=content, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    head, arrays = binary_outputs(answer)
    assert [o["name"] for o in head["outputs"]] == ["label", "probabilities"]
    assert all("data" not in o for o in head["outputs"])
    assert arrays["label"].tolist() == as_json[0]["data"]
    np.testing.assert_array_equal(
        arrays["probabilities"].ravel(), np.asarray(as_json[1]["data"], dtype=np.float32)
    )
    # Binary in, JSON out (no binary output asked for): an ordinary JSON answer.
    content, headers = binary_request(ROWS)
    plain = client.post(INFER, content=content, headers=headers)
    assert plain.headers["content-type"] == "application/json"
    assert plain.json()["outputs"] == as_json
    # JSON in, one output binary and one not, in the order asked.
    mixed = client.post(
        INFER,
        json={
            "inputs": [tensor(ROWS)],
            "outputs": [
                {"name": "probabilities", "parameters": {"binary_data": False}},
                {"name": "label", "parameters": {"binary_data": True}},
            ],
        },
    )
    head, arrays = binary_outputs(mixed)
    assert [o["name"] for o in head["outputs"]] == ["probabilities", "label"]
    assert head["outputs"][0]["data"] == as_json[1]["data"]
    assert arrays["label"].tolist() == [0, 1, 2]


def test_classification_gives_the_top_classes_as_score_index_label(client: TestClient) -> None:
    answer = client.post(
        INFER,
        json={
            "inputs": [tensor(ROWS)],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
        },
    )
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert (output["datatype"], output["shape"]) == ("BYTES", [3, 2])
    best = output["data"][0::2]
    assert [b.split(":", 1)[1] for b in best] == [
        f"{i}:{name}" for i, name in enumerate(CLASS_NAMES)
    ]
    scores = [float(s.split(":")[0]) for s in output["data"]]
    assert all(a >= b for a, b in zip(scores[0::2], scores[1::2], strict=True))
    content, headers = binary_request(
        ROWS, [{"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}}]
    )
    _, arrays = binary_outputs(client.post(INFER, content=content, headers=headers))
    assert arrays["probabilities"].ravel().tolist() == output["data"]


def _error(answer: Any, status: int) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str)
    assert error
    return error


@pytest.mark.parametrize(
    ("method", "path", "status", "names"),
    [
        ("GET", "/v2/models/nope", 404, "'nope'"),
        ("GET", "/v2/models/nope/ready", 404, "'nope'"),
        ("GET", "/v2/models/nope/config", 404, "'nope'"),
        ("GET", "/v2/models/nope/stats", 404, "'nope'"),
        ("POST", "/v2/models/nope/infer", 404, "'nope'"),
        ("POST", "/v2/models/nope/versions/1/infer", 404, "'nope'"),
        ("GET", "/v2/models/iris/versions/999", 404, "'999'"),
        ("GET", "/v2/models/iris/versions/999/ready", 404, "'999'"),
        ("GET", "/v2/models/iris/versions/999/config", 404, "'999'"),
        ("GET", "/v2/models/iris/versions/999/stats", 404, "'999'"),
        ("POST", "/v2/models/iris/versions/999/infer", 404, "'999'"),
        ("GET", "/v2/no/such/path", 404, "Not Found"),
        ("GET", INFER, 405, "Method Not Allowed"),
        ("POST", "/v2/repository/models/iris/unload", 409, "not unloaded on request"),
        ("POST", "/v2/repository/models/nope/load", 404, "'nope'"),
    ],
)
def test_every_error_under_v2_has_the_protocols_error_string(
    client: TestClient, method: str, path: str, status: int, names: str
) -> None:
    body = {"inputs": [tensor(ROWS)]} if path.endswith("infer") else None
    assert names in _error(client.request(method, path, json=body), status)


def test_media_type_json_syntax_and_size_errors(client: TestClient) -> None:
    text = client.post(INFER, content=b"{}", headers={"content-type": "text/plain"})
    assert "application/octet-stream" in _error(text, 415)
    broken = client.post(
        INFER, content=b'{"inputs": [', headers={"content-type": "application/json"}
    )
    assert "json_invalid" in broken.text
    _error(broken, 422)
    assert "body" in _error(client.post(INFER, content=b""), 422)
    huge = b'{"inputs": ' + b" " * (2 * 2**20) + b"[]}"
    assert "over" in _error(client.post(INFER, content=huge), 413)
    config = client.post("/v2/repository/models/iris/load", json={"parameters": {"config": "{}"}})
    assert "configuration" in _error(config, 409)


def _binary_case(case: str) -> tuple[bytes, dict[str, str]]:
    content, headers = binary_request(ROWS)
    length = int(headers[HEADER_LENGTH])
    head, data = content[:length], content[length:]
    spec = json.loads(head)
    if case == "header-not-a-number":
        headers[HEADER_LENGTH] = "twelve"
    elif case == "header-past-the-body":
        headers[HEADER_LENGTH] = str(len(content) + 1)
    elif case == "size-not-the-shape":
        spec["inputs"][0]["parameters"]["binary_data_size"] = 40
        head = json.dumps(spec).encode()
    elif case == "bytes-missing":
        data = data[:-4]
    elif case == "bytes-extra":
        data += b"\0\0\0\0"
    elif case == "data-and-binary":
        spec["inputs"][0]["data"] = ROWS
        head = json.dumps(spec).encode()
    elif case == "bytes-without-binary-input":
        del spec["inputs"][0]["parameters"]
        spec["inputs"][0]["data"] = ROWS
        head = json.dumps(spec).encode()
    elif case == "size-not-an-integer":
        spec["inputs"][0]["parameters"]["binary_data_size"] = "48"
        head = json.dumps(spec).encode()
    elif case == "header-cuts-the-json":
        headers[HEADER_LENGTH] = str(length - 3)
    headers[HEADER_LENGTH] = headers[HEADER_LENGTH] if case.startswith("header") else str(len(head))
    return head + data, headers


@pytest.mark.parametrize(
    ("case", "where"),
    [
        ("header-not-a-number", HEADER_LENGTH),
        ("header-past-the-body", HEADER_LENGTH),
        ("header-cuts-the-json", "json_invalid"),
        ("size-not-the-shape", "inputs.0.parameters.binary_data_size"),
        ("bytes-missing", HEADER_LENGTH),
        ("bytes-extra", HEADER_LENGTH),
        ("data-and-binary", "inputs.0.data"),
        ("bytes-without-binary-input", HEADER_LENGTH),
        ("size-not-an-integer", "inputs.0.parameters.binary_data_size"),
    ],
)
def test_malformed_binary_gets_422_naming_the_part(
    client: TestClient, case: str, where: str
) -> None:
    content, headers = _binary_case(case)
    answer = client.post(INFER, content=content, headers=headers)
    message = _error(answer, 422)
    assert where in (message if where != "json_invalid" else answer.text)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (float("nan"), "finite_number"),
        (float("inf"), "finite_number"),
        (-1.0, "greater_than"),
        (0.0, "greater_than"),
        (30.5, "less_than_equal"),
    ],
)
def test_binary_measurements_have_the_json_limits(
    client: TestClient, value: float, kind: str
) -> None:
    rows = [list(r) for r in ROWS]
    rows[1][2] = value
    content, headers = binary_request(rows)
    answer = client.post(INFER, content=content, headers=headers)
    _error(answer, 422)
    (problem,) = answer.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["body", "inputs", 0, "data", 6], kind)
    if np.isfinite(value):  # the same problem as the JSON tensor gets
        as_json = client.post(INFER, json={"inputs": [tensor(rows)]}).json()["detail"]
        assert [(p["loc"], p["type"], p["msg"]) for p in as_json] == [
            (problem["loc"], problem["type"], problem["msg"])
        ]


def test_binary_rows_over_the_batch_limit_and_bad_outputs(client: TestClient) -> None:
    content, headers = binary_request(ROWS * 2)  # 6 rows, limit 5
    assert "inputs.0.shape.0" in _error(client.post(INFER, content=content, headers=headers), 422)
    twice = {"inputs": [tensor(ROWS)], "outputs": [{"name": "label"}, {"name": "label"}]}
    assert "outputs.1.name" in _error(client.post(INFER, json=twice), 422)
    label_classes = {
        "inputs": [tensor(ROWS)],
        "outputs": [{"name": "label", "parameters": {"classification": 1}}],
    }
    assert "classification" in _error(client.post(INFER, json=label_classes), 422)
    unknown = {"inputs": [tensor(ROWS)], "outputs": [{"name": "scores"}]}
    assert "outputs.0.name" in _error(client.post(INFER, json=unknown), 422)


def _model_stats(client: TestClient, path: str) -> dict[str, Any]:
    (stats,) = client.get(path).json()["model_stats"]
    return dict(stats)


def test_statistics_count_rows_calls_and_refusals(client: TestClient, version: str) -> None:
    path = f"/v2/models/iris/versions/{version}/stats"
    before = _model_stats(client, path)
    client.post(INFER, json={"inputs": [tensor(ROWS)]})
    client.post("/predict", json=dict(zip(("sepal_length", "sepal_width", "petal_length",
                                           "petal_width"), ROWS[0], strict=True)))  # fmt: skip
    client.post(INFER, json={"inputs": [tensor(ROWS, shape=[3, 3])]})  # refused
    after = _model_stats(client, path)
    assert after["inference_count"] - before["inference_count"] == 4
    assert after["execution_count"] - before["execution_count"] == 2
    success, fail = after["inference_stats"]["success"], after["inference_stats"]["fail"]
    assert success["count"] - before["inference_stats"]["success"]["count"] == 2
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert fail["count"] - before["inference_stats"]["fail"]["count"] == 1
    assert after["last_inference"] > 0
    assert after["last_inference"] >= before["last_inference"]
    assert client.get("/v2/models/stats").json() == client.get("/v2/models/iris/stats").json()


def test_repository_index_and_load(client: TestClient, version: str) -> None:
    expected = [{"name": "iris", "version": version, "state": "READY", "reason": ""}]
    assert client.post("/v2/repository/index").json() == expected
    assert client.post("/v2/repository/index", json={"ready": True}).json() == expected
    assert client.post("/v2/repository/models/iris/load").status_code == 200
    bad = client.post("/v2/repository/index", json={"ready": "yes"})
    assert "ready" in _error(bad, 422)


def test_not_ready_answers_carry_the_error(tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path, poll_interval_s=60))
    where = str(tmp_path)
    with TestClient(app) as client:
        for path in ("/v2/health/ready", "/v2/models/iris/ready"):
            answer = client.get(path)
            assert where in _error(answer, 503)
            assert (answer.json()["ready"], answer.headers["retry-after"]) == (False, "60")
        assert where in _error(client.post(INFER, json={"inputs": [tensor(ROWS)]}), 503)
        assert where in _error(client.get("/v2/models/iris/versions/1"), 503)
        assert where in _error(client.post("/v2/repository/models/iris/load"), 503)
        index = client.post("/v2/repository/index").json()
        assert index[0]["state"] == "UNAVAILABLE"
        assert where in index[0]["reason"]
        assert client.post("/v2/repository/index", json={"ready": True}).json() == []


def test_an_older_versions_statistics_stay_readable_after_the_swap(
    tmp_path: Path, onnx_model: OnnxModel
) -> None:
    """Version 1 answered, then version 2 is served: /versions/1/stats still has version 1's
    figures (the statistics keep them); a version that never answered here is a 404."""
    put_version(tmp_path, 1, onnx_model)
    app = create_app(api_settings(tmp_path, poll_interval_s=60))
    with TestClient(app) as client:
        assert client.post(INFER, json={"inputs": [tensor(ROWS)]}).status_code == 200
        put_version(tmp_path, 2, onnx_model)
        follower: ModelFollower = app.state.follower
        assert client.post("/v2/repository/models/iris/load").status_code == 200
        assert follower.current is not None
        assert follower.current.version.version == "2"
        old = client.get("/v2/models/iris/versions/1/stats")
        assert old.status_code == 200, old.text
        [stats] = old.json()["model_stats"]
        assert (stats["version"], stats["inference_count"]) == ("1", 3)
        assert [s["version"] for s in client.get("/v2/models/iris/stats").json()["model_stats"]] == [
            "1", "2"
        ]  # fmt: skip
        assert "versions here are ['1', '2']" in _error(
            client.get("/v2/models/iris/versions/7/stats"), 404
        )
        assert "version 2 is served" in _error(client.get("/v2/models/iris/versions/1"), 404)


@pytest.mark.parametrize("fast", [True, False], ids=["simple-reader", "full-reader"])
def test_ragged_rows_are_refused_naming_the_row_never_re_cut(
    client: TestClient, fast: bool
) -> None:
    """Shape [2, 4] with rows of 3 and 5 values: 8 values, as many as the shape wants, but
    the rows are not the client's rows of 4. The answer names each bad row."""
    body: dict[str, Any] = {"inputs": [tensor([[1, 2, 3], [4, 5, 6, 7, 8]], shape=[2, 4])]}
    if not fast:
        body["parameters"] = {}  # the quick reader leaves such a request to the full one
    answer = client.post(INFER, json=body)
    _error(answer, 422)
    problems = [(p["loc"], p["type"]) for p in answer.json()["detail"]]
    rows = [(["body", "inputs", 0, "data", i], "row_length") for i in (0, 1)]
    assert all(row in problems for row in rows), problems


def test_a_json_value_that_is_0_in_float32_gets_the_answer_a_binary_0_gets(
    client: TestClient,
) -> None:
    rows = [list(r) for r in ROWS]
    rows[1][2] = 0.0
    content, headers = binary_request(rows)
    binary = client.post(INFER, content=content, headers=headers)
    as_json = client.post(
        INFER, content=json.dumps({"inputs": [tensor(rows)]}).replace("0.0", "1e-300"),
        headers={"content-type": "application/json"},
    )  # fmt: skip
    for answer in (binary, as_json):
        _error(answer, 422)
    assert binary.json() == as_json.json()
    [problem] = as_json.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["body", "inputs", 0, "data", 6], "greater_than")


def test_metrics_have_process_and_runtime_metrics_and_speak_openmetrics(
    client: TestClient,
) -> None:
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(text.text)}
    assert {
        "process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds",
        "process_start_time_seconds", "python_info", "python_gc_collections",
        "predicted_class_name", "http_requests",
    } <= names  # fmt: skip
    open_metrics = client.get(
        "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")
    assert "predicted_class_name_total" in open_metrics.text


def test_the_openapi_document_describes_the_v2_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for base in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"):
        for suffix in ("", "/ready", "/config", "/stats"):
            assert "get" in paths[base + suffix], base + suffix
        infer = paths[f"{base}/infer"]["post"]
        assert set(infer["requestBody"]["content"]) == {
            "application/json", "application/octet-stream"
        }  # fmt: skip
        assert set(infer["responses"]["200"]["content"]) == {
            "application/json", "application/octet-stream"
        }  # fmt: skip
        assert {"404", "413", "415", "422", "503"} <= set(infer["responses"])
        assert HEADER_LENGTH in [p["name"] for p in infer["parameters"]]
    for path in ("/v2/repository/index", "/v2/repository/models/{model_name}/load",
                 "/v2/repository/models/{model_name}/unload"):  # fmt: skip
        assert "post" in paths[path]
    assert "get" in paths["/v2/models/stats"]
