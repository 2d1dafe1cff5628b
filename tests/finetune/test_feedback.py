"""The feedback loop with real parts: MLflow, a Prefect server, process workers running the flow
from the finetune environment, the API under uvicorn, and the feedback store on both backends
(a SQLite file, a real PostgreSQL database).

/suggest -> a row in the store (202 = stored) -> a flow run applies the pending rows -> every 5
applied rows a fine-tune -> new versions in the registry -> the API serves them. Crashes are
real: Prefect, a worker and PostgreSQL are killed or stopped while feedback flows.
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
from sqlalchemy import select

from iris_core import EXAMPLES, FEATURES
from iris_core.feedback import STORE_URL, FeedbackStore, Outcome
from iris_core.feedback.schema import feedback as feedback_table
from iris_finetune.flow import FLOW_NAME
from iris_finetune.tune import FEEDBACK_ROWS, PARENT_VERSION
from iris_stack.process import Service, running
from iris_stack.services import prefect_worker
from iris_testing.api import api_process
from iris_testing.feedback import FeedbackCase, suggestion
from iris_testing.ports import free_port
from iris_testing.postgres import new_database, postgres_cluster
from iris_testing.prefect_rest import PrefectRest
from iris_testing.training import Registered

pytestmark = pytest.mark.integration  # MLflow, Prefect, workers, the API, PostgreSQL

ROOT = Path(__file__).resolve().parents[2]
POLL_S = 1.0
FLOWER = dict(zip(FEATURES, EXAMPLES["Iris-setosa"], strict=True))
TOKEN = "a-feedback-token-of-the-tests"  # noqa: S105 (a test token)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: How the API watches the store in these tests: every second, catch-up after 3 s.
FAST_OUTBOX = {"IRIS_API_FEEDBACK_CHECK_S": "1", "IRIS_API_FEEDBACK_STALE_S": "3"}


@contextlib.contextmanager
def api(
    case: FeedbackCase,
    folder: Path,
    bin_dir: Path,
    prefect_url: str | None = None,
    **env: str,
) -> Iterator[httpx.Client]:
    """The API (real uvicorn, its own environment) serving the case's model, storing
    suggestions in its store and asking its deployment for runs; a client for it once the
    model is loaded."""
    settings = {
        "IRIS_API_PREFECT_API_URL": prefect_url or case.prefect.url,
        "IRIS_API_FEEDBACK_DEPLOYMENT": case.deployment,
        "IRIS_API_POLL_INTERVAL_S": str(POLL_S),
        "IRIS_API_FEEDBACK_TOKEN": TOKEN,
        "IRIS_API_FEEDBACK_RATE_LIMIT": "1000/second",
        "IRIS_API_PREFECT_POLL_S": "0",
        STORE_URL: case.store_url,
        **FAST_OUTBOX,
        **env,
    }
    with (
        api_process(folder, case.tracking_uri, case.onnx_model, bin_dir, settings) as url,
        httpx.Client(base_url=url, timeout=60, headers=AUTH) as client,
    ):
        deadline = time.monotonic() + 30
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the API did not load its model"
            time.sleep(0.1)
        yield client


def send(client: httpx.Client, i: int, **headers: str) -> dict[str, Any]:
    response = client.post("/suggest", json=suggestion(i), headers=headers)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


def applied(store: FeedbackStore) -> list[tuple[str, int]]:
    """(key, applied_seq) of every applied row, in applied order."""
    with store.database.read() as conn:
        rows = conn.execute(
            select(feedback_table.c.key, feedback_table.c.applied_seq)
            .where(feedback_table.c.applied_seq.is_not(None))
            .order_by(feedback_table.c.applied_seq)
        ).all()
    return [(str(r.key), int(r.applied_seq)) for r in rows]


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.25)


def wait_applied(case: FeedbackCase, rows: int, finetunes: int, timeout_s: float) -> None:
    """Until `rows` rows are applied and `finetunes` fine-tunes have finished."""

    def done() -> bool:
        backlog = case.store.backlog(every=5)
        return backlog.applied >= rows and sum(backlog.finetunes.values()) >= finetunes

    wait_for(done, timeout_s, f"{rows} rows applied and {finetunes} fine-tunes finished")


def finetune_runs(case: FeedbackCase) -> list[Any]:
    experiment = case.client.get_experiment_by_name(case.experiment)
    if experiment is None:
        return []
    return case.client.search_runs([experiment.experiment_id], "tags.kind = 'finetune'")


def assert_chain(case: FeedbackCase, tuned_at: list[int]) -> None:
    """Both models got a version per fine-tune, each the child of the one before, tuned on the
    expected rows; the last one has the alias."""
    for name in (case.sklearn_model, case.onnx_model):
        versions = case.versions(name)
        assert [v.tags.get(FEEDBACK_ROWS) for v in versions] == [None, *map(str, tuned_at)]
        for parent, child in itertools.pairwise(versions):
            assert child.tags[PARENT_VERSION] == parent.version
        alias = case.client.get_model_version_by_alias(name, "champion")
        assert alias.version == versions[-1].version


def start_worker(
    pool: str, prefect_url: str, case: FeedbackCase, finetune_bin: Path, folder: Path
) -> Service:
    """A process worker of its own (to be killed), from the finetune environment."""
    folder.mkdir(parents=True, exist_ok=True)
    return prefect_worker(
        pool,
        prefect_url,
        folder / "home",
        case.tracking_uri,
        free_port(),
        folder / "worker.log",
        env={"HOME": str(folder)},
        cwd=folder,
        bin_dir=finetune_bin,
    )


# --- the loop -------------------------------------------------------------------------------


def test_four_suggestions_are_applied_without_fine_tune_and_the_fifth_is_served(
    feedback: FeedbackCase, tmp_path: Path, api_bin: Path
) -> None:
    case = feedback
    with api(case, tmp_path, api_bin) as client:
        first = client.get("/model").json()["version"]
        answers = [send(client, i) for i in range(4)]
        assert [a["id"] for a in answers] == [1, 2, 3, 4]
        assert {a["run"] for a in answers} <= {"created", "pending"}
        assert all(a["new"] for a in answers)
        wait_applied(case, 4, 0, 120)
        assert case.store.finetunes() == []
        assert finetune_runs(case) == []

        send(client, 4)
        wait_applied(case, 5, 1, 180)
        done = time.monotonic()
        [tune] = case.store.finetunes()
        assert (tune.rows, tune.outcome) == (5, Outcome.REGISTERED), tune
        [mlflow_run] = finetune_runs(case)
        assert mlflow_run.data.params["n_feedback"] == "5"
        assert_chain(case, [5])

        # The API follows the alias: the new version answers within the poll interval + 5 s.
        new_version = case.versions(case.onnx_model)[-1].version
        assert new_version != first
        while client.post("/predict", json=FLOWER).json()["model_version"] != new_version:
            assert time.monotonic() - done < POLL_S + 5, "the new version was not served"
            time.sleep(0.05)

        stats = client.get("/feedback/stats").json()
        assert (stats["applied"], stats["pending"]) == (5, 0)
        assert stats["finetunes"]["registered"] == 1
        metrics = client.get("/metrics").text
        accepted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("iris_feedback_total{")
        )
        assert accepted == 5
        assert "iris_feedback_applied_rows 5.0" in metrics
        assert "iris_feedback_pending_rows 0.0" in metrics


def test_two_hundred_concurrent_suggestions_are_applied_once_and_fine_tune_forty_times_in_order(
    feedback: FeedbackCase, tmp_path: Path, api_bin: Path
) -> None:
    case = feedback
    with api(case, tmp_path, api_bin) as client:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda i: send(client, i), range(200)))
        assert sorted(a["id"] for a in answers) == list(range(1, 201))
        wait_applied(case, 200, 40, 600)
        stats = client.get("/feedback/stats").json()
        runs = stats["runs"]["new"]
    keys = [key for key, _ in applied(case.store)]
    assert len(keys) == len(set(keys)) == 200  # each row applied once
    assert [seq for _, seq in applied(case.store)] == list(range(1, 201))
    tunes = case.store.finetunes()
    assert [(t.rows, t.outcome) for t in tunes] == [
        (n, Outcome.REGISTERED) for n in range(5, 201, 5)
    ]
    assert sorted(int(r.data.tags[FEEDBACK_ROWS]) for r in finetune_runs(case)) == list(
        range(5, 201, 5)
    )
    assert_chain(case, list(range(5, 201, 5)))
    # A run applies every row pending when it starts: far fewer runs than rows.
    assert runs < 200
    deployment_runs = case.prefect.runs(case.deployment_id)
    assert {r["state_type"] for r in deployment_runs} <= {
        "COMPLETED",
        "SCHEDULED",
        "PENDING",
        "RUNNING",
    }


# --- crashes (the kill matrix is tests/finetune/test_feedback_kills.py) --------------------------------


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_run_cancelled_before_it_starts_leaves_its_rows_to_the_catch_up(
    prefect: PrefectRest,
    registered: Registered,
    store_url: str,
    tmp_path: Path,
    api_bin: Path,
    finetune_bin: Path,
) -> None:
    """The deployment's pool has no worker: the run asked for stays scheduled, and is
    cancelled by hand. The row waits, stored, and the API notices it is overdue; once a worker
    polls the pool, a catch-up run applies it. (A run that ended without applying its rows:
    what the store sees is the same on both backends.)"""
    pool = f"iris-idle-{free_port()}"
    prefect.request("POST", "/work_pools/", json={"name": pool, "type": "process"})
    case = FeedbackCase.create(prefect, registered, tmp_path, store_url=store_url, pool=pool)
    with api(case, tmp_path / "api", api_bin) as client:
        answer = send(client, 0)
        assert answer["run"] == "created"
        cancelled = answer["flow_run_id"]
        prefect.request(
            "POST",
            f"/flow_runs/{cancelled}/set_state",
            json={"state": {"type": "CANCELLED", "name": "Cancelled"}, "force": True},
        )
        wait_for(
            lambda: client.get("/feedback/stats").json()["runs"]["catchup"] >= 1,
            60,
            "the overdue row got no catch-up run",
        )
        assert case.store.backlog(every=5).pending == 1
        worker = start_worker(pool, prefect.url, case, finetune_bin, tmp_path / "worker")
        with running(worker, timeout_s=60):
            wait_applied(case, 1, 0, 120)
    [run] = prefect.runs(ids=[cancelled])
    assert run["state_type"] == "CANCELLED"
    with case.store.database.read() as conn:
        applied_by = conn.execute(select(feedback_table.c.applied_by)).scalar_one()
    assert applied_by != cancelled
    case.store.close()


def test_the_store_down_answers_503_stores_nothing_and_serving_goes_on(
    prefect: PrefectRest, registered: Registered, tmp_path: Path, api_bin: Path
) -> None:
    """A PostgreSQL of its own, stopped while the API runs: suggestions get 503 with a clear
    message and nothing is stored; predictions go on; started again, it takes them again."""
    with postgres_cluster() as cluster:
        url = new_database(cluster)
        case = FeedbackCase.create(prefect, registered, tmp_path, store_url=url)
        with api(case, tmp_path / "api", api_bin) as client:
            assert send(client, 0)["id"] == 1
            cluster.stop()
            refused = client.post("/suggest", json=suggestion(1))
            assert refused.status_code == 503, refused.text
            detail = refused.json()["detail"]
            assert "feedback not accepted" in detail
            assert f"PostgreSQL 127.0.0.1:{cluster.port}" in detail
            assert "pw-not-in-messages" not in detail
            assert refused.headers["retry-after"]
            assert client.post("/predict", json=FLOWER).status_code == 200
            back = cluster.service()
            back.start()
            try:
                back.wait_healthy(30)
                assert send(client, 2)["id"] == 2
            finally:
                case.store.close()
                back.stop()


# --- what is one row, and who may send it -----------------------------------------------------


def test_one_idempotency_key_is_one_row_also_at_once_and_a_recreated_deployment_is_found(
    feedback: FeedbackCase, tmp_path: Path, api_bin: Path
) -> None:
    case = feedback
    with api(case, tmp_path, api_bin) as client:
        key = {"Idempotency-Key": "client-request-1"}
        first = send(client, 0, **key)
        again = send(client, 0, **key)
        assert (first["id"], first["new"]) == (again["id"], True)
        assert again["new"] is False
        assert again["run"] == "earlier"
        assert first["model_agreed"] is True
        with ThreadPoolExecutor(max_workers=10) as pool:
            same = list(pool.map(lambda _: send(client, 1, **{"Idempotency-Key": "k2"}), range(10)))
        assert len({a["id"] for a in same}) == 1
        assert sum(a["new"] for a in same) == 1
        reused = client.post("/suggest", json=suggestion(2), headers=key)
        assert reused.status_code == 409, reused.text
        wait_applied(case, 2, 0, 120)
        asked = len(case.prefect.runs(case.deployment_id))
        case.prefect.wait_final(asked, 120, deployment_id=case.deployment_id)

        # The deployment is deleted and created again under a new id: the cached id answers
        # 404 and the API looks the name up again.
        case.prefect.request("DELETE", f"/deployments/{case.deployment_id}")
        name = case.deployment.split("/", 1)[1]
        new_id = case.prefect.clone_deployment(f"{FLOW_NAME}/local", name, case.env)
        answer = send(client, 3)
        wait_applied(case, 3, 0, 120)
        assert answer["run"] == "created"
        new_runs = [r["id"] for r in case.prefect.runs(new_id)]
        assert answer["flow_run_id"] in new_runs
        with case.store.database.read() as conn:
            applied_by = conn.execute(
                select(feedback_table.c.applied_by).where(feedback_table.c.id == answer["id"])
            ).scalar_one()
        assert applied_by in new_runs


def test_without_the_token_nothing_is_stored_or_run_and_one_client_is_slowed_down(
    prefect: PrefectRest, worker: Service, registered: Registered, tmp_path: Path, api_bin: Path
) -> None:
    case = FeedbackCase.create(prefect, registered, tmp_path)
    with api(case, tmp_path / "api", api_bin, IRIS_API_FEEDBACK_RATE_LIMIT="5/minute") as client:
        missing = client.post("/suggest", json=suggestion(0), headers={"Authorization": ""})
        assert missing.status_code == 401, missing.text
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = client.post(
            "/suggest", json=suggestion(0), headers={"Authorization": "Bearer guess"}
        )
        assert wrong.status_code == 403, wrong.text
        other = client.post(
            "/suggest",
            json=suggestion(0),
            headers={"Authorization": "Bearer the-token-of-another-deployment"},
        )
        assert other.status_code == 403
        basic = client.post(
            "/suggest", json=suggestion(0), headers={"Authorization": f"Basic {TOKEN}"}
        )
        assert basic.status_code == 401
        assert client.post("/predict", json=FLOWER).status_code == 200  # stays open
        backlog = case.store.backlog(every=5)
        assert (backlog.pending, backlog.applied) == (0, 0)
        assert case.prefect.runs(case.deployment_id) == []

        assert send(client, 0)["id"] == 1  # the fifth request from this client
        limited = client.post("/suggest", json=suggestion(1))
        assert limited.status_code == 429, limited.text
        assert 1 <= int(limited.headers["retry-after"]) <= 60
    case.store.close()


BAD = [
    (suggestion(0) | {"class_name": "Iris-rosea"}, "class_name"),
    ({k: v for k, v in suggestion(0).items() if k != "class_name"}, "class_name"),
    (suggestion(0) | {"petal_length": -1.0}, "petal_length"),
    (suggestion(0) | {"sepal_width": "3.5"}, "sepal_width"),
    (suggestion(0) | {"comment": "x"}, "comment"),
]


def test_bad_suggestions_are_refused_naming_the_field_and_store_nothing(
    prefect: PrefectRest, worker: Service, registered: Registered, tmp_path: Path, api_bin: Path
) -> None:
    case = FeedbackCase.create(prefect, registered, tmp_path)
    with api(case, tmp_path / "api", api_bin) as client:
        for body, field in BAD:
            response = client.post("/suggest", json=body)
            assert response.status_code == 422, body
            assert [e["loc"] for e in response.json()["detail"]] == [["body", field]]
        assert "iris_feedback_total{" not in _nonzero(client.get("/metrics").text)
    assert case.prefect.runs(case.deployment_id) == []
    assert case.store.backlog(every=5).pending == 0
    case.store.close()


def test_prefect_unreachable_still_stores_and_answers_202(
    prefect: PrefectRest, registered: Registered, tmp_path: Path, api_bin: Path
) -> None:
    # What a stopped Prefect server looks like to the API: nothing listens at its address.
    case = FeedbackCase.create(prefect, registered, tmp_path)
    gone = f"http://127.0.0.1:{free_port()}/api"
    with api(case, tmp_path / "api", api_bin, gone) as client:
        answer = send(client, 1)
        assert (answer["run"], answer["flow_run_id"]) == ("pending", None)
        wait_for(
            lambda: (
                "iris_feedback_run_request_failures_total 0.0" not in client.get("/metrics").text
            ),
            30,
            "the failed run request was not counted",
        )
        stats = client.get("/feedback/stats").json()
        assert stats["pending"] == 1
        assert "unreachable" in stats["runs"]["last_error"]
        assert client.post("/predict", json=FLOWER).status_code == 200  # serving goes on
    case.store.close()


def test_a_fine_tune_below_the_threshold_registers_nothing(
    prefect: PrefectRest, worker: Service, registered: Registered, tmp_path: Path, api_bin: Path
) -> None:
    # Accuracy must be above 1.0: impossible, so the fine-tune is tracked but not registered.
    case = FeedbackCase.create(prefect, registered, tmp_path, IRIS_FINETUNE_ACCURACY_ABOVE="1.0")
    with api(case, tmp_path / "api", api_bin) as client:
        for i in range(5):
            send(client, i)
        wait_applied(case, 5, 1, 180)
        assert client.get("/model").json()["version"] == case.versions(case.onnx_model)[0].version
    [tune] = case.store.finetunes()
    assert tune.outcome == Outcome.REJECTED
    assert "not above the threshold 1.0000" in (tune.detail or "")
    [run] = finetune_runs(case)
    assert run.data.tags["registered"] == "false"
    for name in (case.sklearn_model, case.onnx_model):
        assert len(case.versions(name)) == 1
        assert case.client.get_model_version_by_alias(name, "champion").version == "1"
    case.store.close()


def test_a_run_started_by_hand_with_a_flower_stores_it_once_and_applies_it(
    prefect: PrefectRest, worker: Service, registered: Registered, tmp_path: Path
) -> None:
    """What the Prefect UI does: a flow run of the deployment with the five parameters."""
    case = FeedbackCase.create(prefect, registered, tmp_path)
    run = case.prefect.request(
        "POST",
        f"/deployments/{case.deployment_id}/create_flow_run",
        json={"parameters": suggestion(4)},
    ).json()
    [final] = case.prefect.wait_final(1, timeout_s=120, ids=[run["id"]])
    assert final["state_type"] == "COMPLETED"
    assert applied(case.store) == [(f"flow-run:{run['id']}", 1)]
    partial = case.prefect.request(
        "POST",
        f"/deployments/{case.deployment_id}/create_flow_run",
        json={"parameters": {"sepal_length": 5.0}},
    ).json()
    [failed] = case.prefect.wait_final(1, timeout_s=120, ids=[partial["id"]])
    assert failed["state_type"] == "FAILED"  # a partial row is refused, nothing stored
    assert case.store.backlog(every=5).applied == 1
    case.store.close()


def _nonzero(metrics: str) -> str:
    """The /metrics lines whose value is not 0."""
    return "\n".join(
        line
        for line in metrics.splitlines()
        if not line.startswith("#") and not line.endswith(" 0.0")
    )
