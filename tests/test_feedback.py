"""The feedback loop with real parts: MLflow, a Prefect server, a process worker running the
flow from the finetune environment, and the API under uvicorn.

/suggest -> Prefect flow run -> row in the feedback store -> every 5 rows a fine-tune -> new
versions in the registry -> the API serves them.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from iris_core import CLASS_NAMES, EXAMPLES, FEATURES
from iris_finetune.flow import FLOW_NAME
from iris_finetune.tune import FEEDBACK_ROWS, PARENT_VERSION
from iris_stack.deploy import deploy_local
from iris_stack.process import Service, running
from iris_stack.services import prefect_server
from iris_testing.api import api_process
from iris_testing.feedback import FeedbackCase
from iris_testing.ports import free_port
from iris_testing.prefect_rest import PrefectRest
from iris_testing.training import Registered

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 1.0
FLOWER = dict(zip(FEATURES, EXAMPLES["Iris-setosa"], strict=True))


def suggestion(i: int) -> dict[str, Any]:
    """The i-th suggestion: a test-set row of each class in turn, with its true class."""
    name = CLASS_NAMES[i % len(CLASS_NAMES)]
    return dict(zip(FEATURES, EXAMPLES[name], strict=True)) | {"class_name": name}


@contextlib.contextmanager
def api(
    case: FeedbackCase, folder: Path, bin_dir: Path, prefect_url: str | None = None
) -> Iterator[httpx.Client]:
    """The API (real uvicorn, its own environment) serving the case's model and sending
    suggestions to its deployment; a client for it once it has loaded the model."""
    env = {
        "IRIS_API_PREFECT_API_URL": prefect_url or case.prefect.url,
        "IRIS_API_FEEDBACK_DEPLOYMENT": case.deployment,
        "IRIS_API_POLL_INTERVAL_S": str(POLL_S),
    }
    with (
        api_process(folder, case.tracking_uri, case.onnx_model, bin_dir, env) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        deadline = time.monotonic() + 30
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the API did not load its model"
            time.sleep(0.1)
        yield client


def send(client: httpx.Client, i: int) -> str:
    response = client.post("/suggest", json=suggestion(i))
    assert response.status_code == 202, response.text
    run_id: str = response.json()["flow_run_id"]
    return run_id


def finetune_runs(case: FeedbackCase) -> list[Any]:
    experiment = case.client.get_experiment_by_name(case.experiment)
    if experiment is None:
        return []
    return case.client.search_runs([experiment.experiment_id], "tags.kind = 'finetune'")


def test_four_suggestions_are_stored_without_fine_tune_and_the_fifth_is_served(
    feedback: FeedbackCase, tmp_path: Path, api_bin: Path
) -> None:
    case = feedback
    with api(case, tmp_path, api_bin) as client:
        first = client.get("/model").json()["version"]

        sent = [send(client, i) for i in range(4)]
        runs = case.prefect.wait_final(4, timeout_s=120, deployment_id=case.deployment_id)
        assert sorted(r["id"] for r in runs) == sorted(sent)
        assert {r["state_type"] for r in runs} == {"COMPLETED"}
        assert case.store.count() == 4
        assert case.store.finetunes() == []
        assert finetune_runs(case) == []
        assert len(case.versions(case.onnx_model)) == len(case.versions(case.sklearn_model)) == 1

        sent.append(send(client, 4))
        runs = case.prefect.wait_final(5, timeout_s=180, deployment_id=case.deployment_id)
        done = time.monotonic()
        assert {r["state_type"] for r in runs} == {"COMPLETED"}, runs
        assert case.store.count() == 5
        [tune] = case.store.finetunes()
        assert (tune.rows, tune.outcome) == (5, "registered"), tune
        [mlflow_run] = finetune_runs(case)
        assert mlflow_run.data.tags[FEEDBACK_ROWS] == "5"
        assert mlflow_run.data.params["n_feedback"] == "5"

        for name in (case.sklearn_model, case.onnx_model):
            parent, new = case.versions(name)
            assert new.tags[PARENT_VERSION] == parent.version
            assert new.tags[FEEDBACK_ROWS] == "5"
            assert new.run_id == mlflow_run.info.run_id
            alias = case.client.get_model_version_by_alias(name, "champion")
            assert alias.version == new.version

        # The API follows the alias: the new version answers within the poll interval + 5 s.
        new_version = case.versions(case.onnx_model)[-1].version
        assert new_version != first
        while client.post("/predict", json=FLOWER).json()["model_version"] != new_version:
            assert time.monotonic() - done < POLL_S + 5, "the new version was not served"
            time.sleep(0.05)

        metrics = client.get("/metrics").text
        accepted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("iris_feedback_total{")
        )
        assert accepted == 5


def test_twenty_concurrent_suggestions_store_twenty_rows_and_fine_tune_four_times_in_order(
    feedback: FeedbackCase, tmp_path: Path, api_bin: Path
) -> None:
    case = feedback
    with api(case, tmp_path, api_bin) as client:
        with ThreadPoolExecutor(max_workers=20) as pool:
            sent = list(pool.map(lambda i: send(client, i), range(20)))
        assert len(set(sent)) == 20
        runs = case.prefect.wait_final(20, timeout_s=420, deployment_id=case.deployment_id)
        assert {r["state_type"] for r in runs} == {"COMPLETED"}, runs

    rows = case.store.rows()
    assert len(rows) == case.store.count() == 20
    assert sorted(r.class_name for r in rows) == sorted(
        suggestion(i)["class_name"] for i in range(20)
    )
    tunes = case.store.finetunes()
    assert [(t.rows, t.outcome) for t in tunes] == [(n, "registered") for n in (5, 10, 15, 20)]
    assert sorted(int(r.data.tags[FEEDBACK_ROWS]) for r in finetune_runs(case)) == [5, 10, 15, 20]
    # Each fine-tune starts from the one before: a chain of versions, the last one champion.
    for name in (case.sklearn_model, case.onnx_model):
        versions = case.versions(name)
        assert [v.tags.get(FEEDBACK_ROWS) for v in versions] == [None, "5", "10", "15", "20"]
        for parent, child in itertools.pairwise(versions):
            assert child.tags[PARENT_VERSION] == parent.version
        assert (
            case.client.get_model_version_by_alias(name, "champion").version == versions[-1].version
        )


def test_a_fine_tune_below_the_threshold_registers_nothing(
    prefect: PrefectRest, worker: Service, registered: Registered, tmp_path: Path, api_bin: Path
) -> None:
    # Accuracy must be above 1.0: impossible, so the fine-tune is tracked but not registered.
    case = FeedbackCase.create(prefect, registered, tmp_path, IRIS_FINETUNE_ACCURACY_ABOVE="1.0")
    with api(case, tmp_path, api_bin) as client:
        for i in range(5):
            send(client, i)
        runs = case.prefect.wait_final(5, timeout_s=180, deployment_id=case.deployment_id)
        assert {r["state_type"] for r in runs} == {"COMPLETED"}
        assert client.get("/model").json()["version"] == case.versions(case.onnx_model)[0].version

    [tune] = case.store.finetunes()
    assert tune.outcome == "rejected"
    assert "not above the threshold 1.0000" in (tune.detail or "")
    [run] = finetune_runs(case)
    assert run.data.tags["registered"] == "false"
    assert "not above the threshold" in run.data.tags["reason"]
    for name in (case.sklearn_model, case.onnx_model):
        assert len(case.versions(name)) == 1
        assert case.client.get_model_version_by_alias(name, "champion").version == "1"


BAD = [
    (suggestion(0) | {"class_name": "Iris-rosea"}, "class_name"),
    ({k: v for k, v in suggestion(0).items() if k != "class_name"}, "class_name"),
    (suggestion(0) | {"petal_length": -1.0}, "petal_length"),
    (suggestion(0) | {"sepal_width": "3.5"}, "sepal_width"),
    (suggestion(0) | {"comment": "x"}, "comment"),
]


def test_bad_suggestions_are_refused_naming_the_field_and_start_no_run(
    feedback: FeedbackCase, tmp_path: Path, api_bin: Path
) -> None:
    case = feedback
    with api(case, tmp_path, api_bin) as client:
        for body, field in BAD:
            response = client.post("/suggest", json=body)
            assert response.status_code == 422, body
            assert [e["loc"] for e in response.json()["detail"]] == [["body", field]]
        assert "iris_feedback_total{" not in _nonzero(client.get("/metrics").text)
    assert case.prefect.runs(case.deployment_id) == []
    assert case.store.count() == 0


def test_prefect_unreachable_answers_503_and_nothing_is_stored(
    feedback: FeedbackCase, tmp_path: Path, api_bin: Path
) -> None:
    # What a stopped Prefect server looks like to the API: nothing listens at its address.
    case = feedback
    gone = f"http://127.0.0.1:{free_port()}/api"
    with api(case, tmp_path, api_bin, gone) as client:
        response = client.post("/suggest", json=suggestion(1))
        assert response.status_code == 503
        assert f"Prefect at {gone} is unreachable" in response.json()["detail"]
        assert "not accepted" in response.json()["detail"]
        assert response.headers["retry-after"]
        metrics = _nonzero(client.get("/metrics").text)
        assert "iris_feedback_failures_total 1.0" in metrics
        assert "iris_feedback_total{" not in metrics
        assert client.post("/predict", json=FLOWER).status_code == 200  # serving goes on
    assert case.prefect.runs(case.deployment_id) == []
    assert case.store.count() == 0


def test_prefect_stopped_answers_503_and_the_refused_suggestion_created_no_run(
    feedback: FeedbackCase, tmp_path: Path, api_bin: Path
) -> None:
    """A Prefect server of its own, with the `local` deployment as `make up` makes it (and no
    worker: runs stay scheduled, so they can be counted): one suggestion while it runs, one
    after it stopped; restarted on the same state, it holds exactly the first run."""
    state, port = tmp_path / "prefect", free_port()
    server = prefect_server(state, port)
    url = server.health_url.removesuffix("/health")
    with running(server, timeout_s=120):
        deploy_local(url, state / "client", "iris-stopped", ROOT)
        env = {
            "IRIS_API_PREFECT_API_URL": url,
            "IRIS_API_POLL_INTERVAL_S": str(POLL_S),
            "IRIS_API_PREFECT_POLL_S": "0",
        }
        with (
            api_process(
                tmp_path / "api", feedback.tracking_uri, feedback.onnx_model, api_bin, env
            ) as base,
            httpx.Client(base_url=base, timeout=60) as client,
        ):
            first = client.post("/suggest", json=suggestion(0))
            assert first.status_code == 202, first.text
            server.stop()
            refused = client.post("/suggest", json=suggestion(1))
            assert refused.status_code == 503
            assert f"Prefect at {url} is unreachable" in refused.json()["detail"]
            assert client.post("/predict", json=FLOWER).status_code == 200
    with running(prefect_server(state, port), timeout_s=120):
        again = PrefectRest(url)
        runs = again.request("POST", "/flow_runs/filter", json={}).json()
        again.close()
    assert [r["id"] for r in runs] == [first.json()["flow_run_id"]]


def test_an_idempotency_key_makes_a_retried_suggestion_one_run_and_a_recreated_deployment_is_found(
    feedback: FeedbackCase, tmp_path: Path, api_bin: Path
) -> None:
    case = feedback
    with api(case, tmp_path, api_bin) as client:
        key = {"Idempotency-Key": "client-request-1"}
        first = client.post("/suggest", json=suggestion(0), headers=key).json()
        again = client.post("/suggest", json=suggestion(0), headers=key).json()
        assert again["flow_run_id"] == first["flow_run_id"]
        assert (first["new"], again["new"]) == (True, False)
        assert first["model_agreed"] is True
        case.prefect.wait_final(1, timeout_s=120, deployment_id=case.deployment_id)
        assert case.store.count() == 1

        # The deployment is deleted and created again under a new id: the cached id answers
        # 404 and the API looks the name up again.
        case.prefect.request("DELETE", f"/deployments/{case.deployment_id}")
        name = case.deployment.split("/", 1)[1]
        new_id = case.prefect.clone_deployment(f"{FLOW_NAME}/local", name, case.env)
        run = client.post("/suggest", json=suggestion(1))
        assert run.status_code == 202, run.text
        runs = case.prefect.wait_final(1, timeout_s=120, deployment_id=new_id)
        assert [r["id"] for r in runs] == [run.json()["flow_run_id"]]
        assert runs[0]["state_type"] == "COMPLETED"
    assert case.store.count() == 2


def _nonzero(metrics: str) -> str:
    """The /metrics lines whose value is not 0."""
    return "\n".join(
        line
        for line in metrics.splitlines()
        if not line.startswith("#") and not line.endswith(" 0.0")
    )
