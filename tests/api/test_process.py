"""The API as it runs: a real uvicorn process, a real MLflow server, a model trained and
registered by the training code, real onnxruntime on both sides of the comparison."""

from __future__ import annotations

import csv
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import onnxruntime as ort
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from iris_core import CLASS_NAMES, FEATURES
from iris_stack.process import running
from iris_stack.services import mlflow_server
from iris_testing.api import api_process
from iris_testing.ports import free_port
from iris_testing.training import Registered, own_registry, small_params
from iris_training.train import train

pytestmark = pytest.mark.integration

#: A Prefect API address where nothing listens.
NO_PREFECT = f"http://127.0.0.1:{free_port()}/api"

POLL_S = 1.0


def _test_set(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with (data_dir / "test.csv").open() as f:
        rows = [[float(x) for x in row] for row in csv.reader(f)]
    table = np.array(rows)
    return table[:, :4].astype(np.float32), table[:, 4].astype(int)


def _samples(registry_metrics: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(registry_metrics)
        for s in family.samples
        if s.name == name
    }


@pytest.fixture(scope="module")
def api(
    registered: Registered, api_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("api")
    with api_process(
        folder,
        registered.tracking_uri,
        registered.model_name,
        api_bin,
        env={
            "IRIS_API_POLL_INTERVAL_S": str(POLL_S),
            "IRIS_API_BATCH_LIMIT": "50",
            # No Prefect here (tests/finetune/test_feedback.py has one): /suggest answers 503.
            "IRIS_API_PREFECT_API_URL": NO_PREFECT,
        },
    ) as url:
        yield url
    # Read-only root filesystem: nothing in HOME or the working directory, nothing left in TMPDIR.
    assert [p.name for p in (folder / "home").rglob("*")] == []
    assert [p.name for p in (folder / "cwd").rglob("*")] == []
    assert [p.name for p in (folder / "tmp").rglob("*")] == []


def test_test_set_scores_above_90_percent_and_matches_onnxruntime_directly(
    api: str, registered: Registered, data_dir: Path, tmp_path: Path
) -> None:
    x, y = _test_set(data_dir)
    version = registered.outcome.versions[registered.model_name]
    mlflow.set_tracking_uri(registered.tracking_uri)
    folder = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{registered.model_name}/{version}", dst_path=str(tmp_path)
        )
    )
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"input": x})

    with httpx.Client(base_url=api) as client:
        before = _samples(client.get("/metrics").text, "predicted_class_name_total")
        answers = [
            client.post("/predict", json=dict(zip(FEATURES, row.tolist(), strict=True))).json()
            for row in x
        ]
        batch = client.post(
            "/predict/batch",
            json={"instances": [dict(zip(FEATURES, row.tolist(), strict=True)) for row in x]},
        ).json()
        after = _samples(client.get("/metrics").text, "predicted_class_name_total")

    predicted = np.array([a["class_index"] for a in answers])
    assert (predicted == y).mean() > 0.9
    assert predicted.tolist() == labels.tolist()
    assert [a["class_name"] for a in answers] == [CLASS_NAMES[i] for i in labels]
    assert {a["model_version"] for a in answers} == {version}
    served = np.array([[a["probabilities"][c] for c in CLASS_NAMES] for a in answers])
    np.testing.assert_allclose(served, probabilities, atol=1e-6)
    assert [p["class_index"] for p in batch["predictions"]] == labels.tolist()

    # Known traffic, known counts: every row twice (single, then batch), by predicted class.
    for index, name in enumerate(CLASS_NAMES):
        key = (("class_name", name),)
        assert after[key] - before.get(key, 0.0) == 2 * int((labels == index).sum())


def test_metrics_have_the_seed_counter_and_ours(api: str) -> None:
    with httpx.Client(base_url=api) as client:
        client.post("/predict", json={"sepal_length": -1})  # a 4xx for the request metrics
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {s.labels["class_name"] for s in families["predicted_class_name"].samples} == set(
        CLASS_NAMES
    )
    for name in (
        "iris_inference_duration_seconds",
        "iris_prediction_confidence",
        "iris_model_info",
        "iris_model_loaded",
        "iris_model_reloads",
        "iris_registry_errors",
        "http_requests",
        "http_request_duration_seconds",
        "http_request_duration_highr_seconds",
        "http_request_size_bytes",
        "http_response_size_bytes",
    ):
        assert name in families, name
    handlers = {
        (s.labels["handler"], s.labels["status"]) for s in families["http_requests"].samples
    }
    assert ("/predict", "4xx") in handlers
    assert _samples(text, "iris_model_loaded") == {(): 1.0}


def test_a_new_version_is_served_within_the_poll_interval_without_a_failed_request(
    api: str, registered: Registered
) -> None:
    client = MlflowClient(registered.tracking_uri)
    name = registered.model_name
    old = client.get_model_version_by_alias(name, "champion")

    @dataclass
    class Load:
        stop: threading.Event = field(default_factory=threading.Event)
        versions: list[tuple[float, str]] = field(default_factory=list)
        failures: list[str] = field(default_factory=list)

    load = Load()

    def hammer() -> None:
        with httpx.Client(base_url=api, timeout=5) as http:
            deadline = time.monotonic() + 60  # bounded whatever happens
            while not load.stop.is_set() and time.monotonic() < deadline:
                try:
                    r = http.post(
                        "/predict", json=dict(zip(FEATURES, (6.4, 3.2, 4.5, 1.5), strict=True))
                    )
                except httpx.HTTPError as e:
                    load.failures.append(repr(e))
                    continue
                if r.status_code != 200:
                    load.failures.append(f"{r.status_code} {r.text}")
                else:
                    load.versions.append((time.monotonic(), r.json()["model_version"]))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        time.sleep(0.5)
        new = client.create_model_version(
            name,
            str(old.source),
            run_id=old.run_id,
            model_id=str(old.source).removeprefix("models:/"),
        )
        client.set_registered_model_alias(name, "champion", new.version)
        moved = time.monotonic()
        deadline = moved + POLL_S + 10
        while time.monotonic() < deadline and not any(
            v == new.version for _, v in load.versions[-5:]
        ):
            time.sleep(0.05)
        time.sleep(0.3)  # a little traffic after the swap
    finally:
        load.stop.set()
        worker.join()
        client.set_registered_model_alias(name, "champion", old.version)

    assert load.failures == []
    first_new = next(t for t, v in load.versions if v == new.version)
    assert first_new - moved <= POLL_S + 2
    # Once switched, it stays switched: no answer from the old version after the first new one.
    assert {v for t, v in load.versions if t > first_new} == {new.version}
    assert len(load.versions) > 50


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_for_any_generated_request(api: str, mode: GenerationMode) -> None:
    """Schemathesis generates requests for every operation of the OpenAPI spec, valid ones and
    invalid ones: never a 5xx, never a stack trace; under /v2 every answer's status, media type
    and body as the document describes them. (Its pytest plugin does not run on pytest 9 yet,
    so the operations' Hypothesis strategies are driven here.)"""
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 21
    documented = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not len(operation.body):
            continue  # nothing to get wrong in a GET without parameters

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=50,
            deadline=None,
            database=None,  # nothing written to the working tree
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call(timeout=10)
            if response.status_code == 503 and case.operation.path == "/suggest":
                # Without a feedback store a valid suggestion is refused, as documented.
                assert "no feedback store configured" in response.json()["detail"]
            elif case.operation.path.startswith("/v2"):
                case.validate_response(response, checks=documented)
            else:
                case.validate_response(response, checks=[not_a_server_error])
            assert "Traceback" not in response.text

        check()


def test_the_api_environment_has_no_training_stack_and_no_mlflow(api_bin: Path) -> None:
    def imports(module: str) -> bool:
        check = [str(api_bin / "python"), "-c", f"import {module}"]
        return subprocess.run(check, capture_output=True, check=False).returncode == 0

    assert all(imports(m) for m in ("iris_api", "onnxruntime", "fastapi", "uvicorn"))
    absent = ("mlflow", "sklearn", "skl2onnx", "pandas", "iris_training", "iris_testing")
    assert not any(imports(m) for m in absent)


def test_a_bad_setting_stops_iris_api_naming_the_variable(api_bin: Path) -> None:
    result = subprocess.run(
        [str(api_bin / "iris-api")],
        env={"PATH": "/usr/bin:/bin", "IRIS_API_PORT": "http", "IRIS_API_ORT_THREADS": "0"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert "IRIS_API_PORT: Input should be a valid integer" in result.stderr
    assert "IRIS_API_ORT_THREADS: Input should be greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_starts_without_mlflow_then_follows_it_and_keeps_serving_once_it_is_gone(
    tmp_path: Path, data_dir: Path, api_bin: Path
) -> None:
    port = free_port()
    tracking = f"http://127.0.0.1:{port}"
    params, reg = small_params(), own_registry()
    with (
        api_process(
            tmp_path / "api",
            tracking,
            reg.onnx_model_name,
            api_bin,
            env={"IRIS_API_POLL_INTERVAL_S": str(POLL_S)},
        ) as url,
        httpx.Client(base_url=url, timeout=5) as client,
    ):
        # No MLflow at all: the process is up, not ready, and says why.
        assert client.get("/v2/health/live").status_code == 200
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "unreachable" in ready.json()["reason"]
        assert client.post("/predict", json={}).status_code in (422, 503)

        with running(mlflow_server(tmp_path / "mlflow", port)):
            train(
                params, reg, data_dir, tmp_path / "m.json", tmp_path / "c.csv", tracking, n_jobs=1
            )
            deadline = time.monotonic() + 30
            while client.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline, client.get("/v2/health/ready").text
                time.sleep(0.1)
            assert client.get("/model").json()["version"] == "1"

        # MLflow is gone: predictions go on for several poll intervals, errors are counted.
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < 3 * POLL_S:
            r = client.post("/predict", json=dict(zip(FEATURES, (5.1, 3.5, 1.4, 0.2), strict=True)))
            assert r.status_code == 200, r.text
            answered += 1
        assert answered > 10
        assert client.get("/v2/health/ready").status_code == 200
        errors = _samples(client.get("/metrics").text, "iris_registry_errors_total")
        assert errors[()] >= 2  # before MLflow came, and after it went


@pytest.mark.parametrize(
    ("proxy_headers", "access_log", "limited"),
    [("false", "true", True), ("true", "false", False)],
    ids=["peer-is-the-client-with-the-access-log-on", "forwarded-client-without-the-log"],
)
def test_who_the_rate_limit_counts_is_its_own_setting_not_the_access_logs(
    tmp_path: Path, model_dir: Path, api_bin: Path, proxy_headers: str, access_log: str,
    limited: bool,
) -> None:  # fmt: skip
    """Two clients behind one proxy (this machine) at 2 suggestions a minute each. Without
    IRIS_API_PROXY_HEADERS the proxy is the client, whatever the access log does: the second
    client's first suggestion is its third, 429. With it, X-Forwarded-For names each client."""
    env = {
        "IRIS_API_MODEL_DIR": str(model_dir),
        "IRIS_API_PROXY_HEADERS": proxy_headers,
        "IRIS_API_ACCESS_LOG": access_log,
        "IRIS_API_FEEDBACK_RATE_LIMIT": "2/minute",
        "IRIS_FEEDBACK_STORE_URL": f"sqlite:///{tmp_path / 'feedback.db'}",
        "IRIS_API_PREFECT_API_URL": NO_PREFECT,  # the rows are stored, their runs wait
    }
    flower = dict(zip(FEATURES, (5.1, 3.5, 1.4, 0.2), strict=True)) | {"class_name": "Iris-setosa"}
    with (
        api_process(tmp_path / "api", "http://127.0.0.1:9", "IrisModel", api_bin, env) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):

        def suggest(who: str) -> int:
            return client.post(
                "/suggest", json=flower, headers={"X-Forwarded-For": who}
            ).status_code

        assert [suggest("192.0.2.1"), suggest("192.0.2.1")] == [202, 202]
        assert suggest("192.0.2.2") == (429 if limited else 202)
        assert suggest("192.0.2.1") == 429
