"""The kill matrix of the feedback path: Prefect's server, a worker and the API SIGKILLed at
each moment of a flow run that matters; each case ends with every accepted row applied once,
a fine-tune at each multiple of 5 and no model version twice.

The moments, each reached by a hold (`iris_testing.holds`) so the kill lands exactly there:

- scheduled: the run exists, no worker has claimed it (its pool has no worker yet);
- submitting: a worker claimed it (PENDING) and started its process, which waits before the
  engine (`HeldStart`);
- applying: the run's claim of the pending rows waits for the store's rows lock, inside its
  transaction (`StoreLock`);
- finetuning: the fine-tune's MLflow run exists and its first log call is held (`MlflowGate`);
- registering: MLflow has made the first new model version and its answer is held.

Cases of one matrix run at once, each with its own work pool, worker, API, feedback store
and copies of the registered models; Prefect's server is the shared one when it is killed.
Each case prints how long it took from recovery (Prefect back, a new worker, the API back) to
its last row applied and fine-tune finished.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from iris_core.feedback import STORE_URL, Outcome
from iris_core.feedback.schema import feedback as feedback_table
from iris_finetune.tune import FEEDBACK_ROWS, PARENT_VERSION
from iris_stack.deploy import deploy_local
from iris_stack.process import Service, running
from iris_stack.services import api_server, prefect_server, prefect_worker
from iris_testing.feedback import FeedbackCase, suggestion
from iris_testing.holds import HeldStart, Hold, MlflowGate, StoreLock, python_of, wait
from iris_testing.kill import kill_tree
from iris_testing.ports import free_port
from iris_testing.postgres import new_database
from iris_testing.prefect_rest import PrefectRest
from iris_testing.training import Registered

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a-feedback-token-of-the-tests"  # noqa: S105 (a test token)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The API watches closely in these tests: the store every second, a row pending 3 s gets a
#: catch-up run, a run not started after 30 s is replaced (a flow run process takes up to
#: 15 s from its claim to RUNNING while the cases of a matrix share two cores).
OUTBOX = {
    "IRIS_API_FEEDBACK_CHECK_S": "1",
    "IRIS_API_FEEDBACK_STALE_S": "3",
    "IRIS_API_FEEDBACK_START_TIMEOUT_S": "30",
    "IRIS_API_FEEDBACK_RUN_WAIT_S": "0.5",
}
#: A dead run's fine-tune is taken over 6 s after its last renewal.
LEASE_S = "6"
#: Rows each case sends before the kill: a fine-tune owed at 5; at 5 and 10 where the kill
#: lands in a fine-tune, so the one after the takeover shows the chain goes on from it.
ROWS = {"finetuning": 10, "registering": 10}
EVERY = 5
#: The moments whose outcome depends on the store (its locks, leases, checkpoints) run on
#: both backends; the others on the embedded one.
BOTH = ("sqlite", "postgresql")
MOMENTS = ("scheduled", "submitting", "applying", "finetuning", "registering")
BURST = 20  # suggestions of the API-killed case
#: Recovery time each case took, for the test report.
TIMINGS: dict[str, float] = {}


@dataclass
class Case:
    """One moment of a run, set up to be held there: its own pool, worker, API and store."""

    moment: str
    backend: str
    feedback: FeedbackCase
    pool: str
    folder: Path
    prefect_url: str
    api_port: int
    api_env: dict[str, str]
    api_bin: Path
    finetune_bin: Path
    gate: MlflowGate
    start_hold: HeldStart | None = None
    lock: StoreLock | None = None
    mlflow_hold: Hold | None = None
    worker: Service | None = None
    api: Service | None = None
    client: httpx.Client | None = None
    run_id: str | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def label(self) -> str:
        return f"{self.moment} ({self.backend})"

    @property
    def rows(self) -> int:
        return ROWS.get(self.moment, EVERY)

    # --- parts ---------------------------------------------------------------------------

    def start_worker(self, name: str) -> Service:
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        worker = prefect_worker(
            self.pool, self.prefect_url, folder / "home", self.gate.url, free_port(),
            folder / "worker.log", env={"HOME": str(folder)}, cwd=folder,
            bin_dir=self.finetune_bin,
        )  # fmt: skip
        worker.start()
        worker.wait_healthy(60)
        self.worker = worker
        self.stack.callback(worker.stop)
        return worker

    def start_api(self) -> httpx.Client:
        """The API on its own port (the same after a restart), ready with its model."""
        folder = self.folder / "api"
        folder.mkdir(parents=True, exist_ok=True)
        api = api_server(
            self.api_port, self.feedback.tracking_uri, folder / "api.log",
            env=self.api_env, bin_dir=self.api_bin, cwd=folder,
        )  # fmt: skip
        api.start()
        self.stack.callback(api.stop)
        api.wait_healthy(60)
        self.api = api
        if self.client is None:
            self.client = httpx.Client(
                base_url=f"http://127.0.0.1:{self.api_port}", timeout=60, headers=AUTH
            )
            self.stack.callback(self.client.close)
        wait(
            lambda: self.http.get("/v2/health/ready").status_code == 200,
            30,
            f"{self.label}: the API did not load its model",
        )
        return self.client

    @property
    def http(self) -> httpx.Client:
        assert self.client is not None
        return self.client

    def send(self, rows: range) -> None:
        for i in rows:
            response = self.http.post("/suggest", json=suggestion(i))
            assert response.status_code == 202, response.text

    # --- the moments ---------------------------------------------------------------------

    def bring_to_hold(self) -> None:
        """Send the rows and wait until the run is held at this case's moment."""
        self.send(range(self.rows))
        if self.moment == "scheduled":  # no worker polls the pool yet
            wait(lambda: self.stats()["runs"]["new"] >= 1, 30, f"{self.label}: no run")
        elif self.moment in ("submitting", "applying"):
            assert self.start_hold is not None
            self.run_id = self.start_hold.wait_arrived(60)
            if self.moment == "applying":
                self.lock = StoreLock(self.feedback.store_url)
                self.start_hold.release()
                pid = self.run_pid()
                wait(
                    lambda: self.lock is not None and self.lock.waiters(pid),
                    60,
                    f"{self.label}: the run's claim did not wait for the rows lock",
                )
        else:
            assert self.mlflow_hold is not None
            self.mlflow_hold.wait_arrived(300)

    def release(self, dead_client: bool) -> None:
        """Let the held run go on (it may be dead already)."""
        if self.start_hold is not None:
            self.start_hold.release()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.mlflow_hold is not None:
            self.mlflow_hold.release(drop=dead_client)

    def run_pid(self) -> int:
        """The process of the held run (the process worker's infrastructure pid)."""
        rest = PrefectRest(self.prefect_url)
        try:
            found: dict[str, Any] = {}

            def known() -> bool:
                found.update(rest.request("GET", f"/flow_runs/{self.run_id}").json())
                return bool(found.get("infrastructure_pid"))

            wait(known, 30, f"{self.label}: the run has no process id")
            return int(str(found["infrastructure_pid"]).rsplit(":", 1)[-1])
        finally:
            rest.close()

    # --- the outcome ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get("/feedback/stats").json()
        return answer

    def done(self, rows: int, finetunes: int) -> bool:
        backlog = self.feedback.store.backlog(every=5)
        return backlog.applied >= rows and sum(backlog.finetunes.values()) >= finetunes

    def check(self) -> None:
        """Every row applied once in acceptance order, a fine-tune at each multiple of 5
        registered, one version of each model per fine-tune, each the child of the one
        before."""
        store = self.feedback.store
        with store.database.read() as conn:
            rows = conn.execute(
                select(feedback_table.c.key, feedback_table.c.applied_seq).order_by(
                    feedback_table.c.id
                )
            ).all()
        assert len(rows) == len({r.key for r in rows}) == self.rows, self.label
        assert [r.applied_seq for r in rows] == list(range(1, self.rows + 1)), self.label
        owed = list(range(EVERY, self.rows + 1, EVERY))
        tunes = [(t.rows, t.outcome) for t in store.finetunes()]
        assert tunes == [(k, Outcome.REGISTERED) for k in owed], self.label
        case = self.feedback
        for name in (case.sklearn_model, case.onnx_model):
            versions = case.versions(name)
            assert [v.tags.get(FEEDBACK_ROWS) for v in versions] == [None, *map(str, owed)], (
                f"{self.label}: {name} has versions {[(v.version, v.tags) for v in versions]}"
            )
            for parent, child in itertools.pairwise(versions):
                assert child.tags[PARENT_VERSION] == parent.version, self.label
            champion = case.client.get_model_version_by_alias(name, "champion")
            assert champion.version == versions[-1].version, self.label


def make_case(
    moment: str,
    backend: str,
    prefect: PrefectRest,
    registered: Registered,
    store_url: str,
    folder: Path,
    api_bin: Path,
    finetune_bin: Path,
) -> Case:
    pool = f"kill-{moment}-{uuid.uuid4().hex[:6]}"
    prefect.request("POST", "/work_pools/", json={"name": pool, "type": "process"})
    gate = MlflowGate(registered.tracking_uri)
    start_hold = (
        HeldStart(folder / "hold", python_of(finetune_bin))
        if moment in ("submitting", "applying")
        else None
    )
    feedback = FeedbackCase.create(
        prefect,
        registered,
        folder,
        store_url=store_url,
        pool=pool,
        job_variables=start_hold.job_variables if start_hold else None,
        IRIS_FINETUNE_TRACKING_URI=gate.url,
        IRIS_FINETUNE_LEASE_S=LEASE_S,
    )
    case = Case(
        moment=moment,
        backend=backend,
        feedback=feedback,
        pool=pool,
        folder=folder,
        prefect_url=prefect.url,
        api_port=free_port(),
        api_env={
            "IRIS_API_MODEL_NAME": feedback.onnx_model,
            "IRIS_API_PREFECT_API_URL": prefect.url,
            "IRIS_API_FEEDBACK_DEPLOYMENT": feedback.deployment,
            "IRIS_API_POLL_INTERVAL_S": "1",
            "IRIS_API_FEEDBACK_TOKEN": TOKEN,
            "IRIS_API_FEEDBACK_RATE_LIMIT": "1000/second",
            "IRIS_API_PREFECT_POLL_S": "0",
            STORE_URL: store_url,
            "HOME": str(folder),
            **OUTBOX,
        },
        api_bin=api_bin,
        finetune_bin=finetune_bin,
        gate=gate,
        start_hold=start_hold,
    )
    case.stack.enter_context(gate)
    case.stack.callback(feedback.store.close)
    if moment == "finetuning":  # the fine-tune's MLflow run is made; its first log is held
        case.mlflow_hold = gate.hold("POST", "/api/2.0/mlflow/runs/log-batch")
    elif moment == "registering":  # the first new version is made; MLflow's answer is held
        case.mlflow_hold = gate.hold("POST", "/model-versions/create", before=False)
    return case


Stores = Callable[[str], str]


@dataclass(frozen=True)
class Parts:
    """What every case is made of: the registered champions it copies, new stores, the API's
    and the fine-tune's environments, and a folder."""

    registered: Registered
    stores: Stores
    api_bin: Path
    finetune_bin: Path
    folder: Path


@pytest.fixture
def parts(
    registered: Registered, tmp_path: Path, api_bin: Path, finetune_bin: Path,
    request: pytest.FixtureRequest,
) -> Parts:  # fmt: skip
    """New, empty feedback stores, one a call (a SQLite file, or a database of the session's
    PostgreSQL), and the rest of what the cases need."""
    counter = itertools.count()

    def new(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'store-{next(counter)}.db'}"
        return new_database(request.getfixturevalue("postgres"))

    return Parts(registered, new, api_bin, finetune_bin, tmp_path)


@contextlib.contextmanager
def cases(
    moments: list[tuple[str, str]], prefect: PrefectRest, parts: Parts
) -> Iterator[list[Case]]:
    """One case per (moment, store backend)."""
    made = []
    for moment, backend in moments:
        made.append(
            make_case(
                moment, backend, prefect, parts.registered, parts.stores(backend),
                parts.folder / f"{moment}-{backend}", parts.api_bin, parts.finetune_bin,
            )
        )  # fmt: skip
    try:
        yield made
    finally:
        for case in made:
            case.release(dead_client=True)
            case.stack.close()


def at_once(function: Callable[[Case], Any], made: list[Case]) -> None:
    """`function` on every case in parallel threads; the first error raised here."""
    with ThreadPoolExecutor(max_workers=len(made)) as pool:
        for future in [pool.submit(function, case) for case in made]:
            future.result()


def recover(case: Case, since: float, what: str) -> None:
    """Until every row is applied and both fine-tunes finished; the time since `since`."""
    rows = case.rows
    wait(lambda: case.done(rows, rows // EVERY), 300, f"{what}, {case.label}: not applied", 0.2)
    TIMINGS[f"{what}, {case.label}"] = time.monotonic() - since
    case.check()


def report(what: str) -> None:
    print({k: round(v, 1) for k, v in TIMINGS.items() if k.startswith(what)})


def test_prefect_killed_at_each_moment_of_a_run_delays_rows_and_loses_none(
    parts: Parts, tmp_path: Path
) -> None:
    """A Prefect server of its own, SIGKILLed (its process group) while runs are held at
    every moment; started again on the same database, every case recovers."""
    state, port = tmp_path / "prefect", free_port()
    url = f"http://127.0.0.1:{port}/api"
    server = prefect_server(state, port)
    # What dies is Prefect: the store sees nothing of it, so the embedded store serves all.
    moments = [(m, "sqlite") for m in MOMENTS]
    with contextlib.ExitStack() as stack:
        stack.enter_context(running(server, timeout_s=120))
        deploy_local(url, state / "client", "iris-killed", ROOT)
        rest = PrefectRest(url)
        stack.callback(rest.close)
        made = stack.enter_context(cases(moments, rest, parts))

        def prepare(case: Case) -> None:
            case.start_api()
            if case.moment != "scheduled":
                case.start_worker("w1")
            case.bring_to_hold()

        at_once(prepare, made)
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        for case in made:  # the held runs go on, against a Prefect that is gone
            case.release(dead_client=False)
        stack.enter_context(running(prefect_server(state, port), timeout_s=120))
        since = time.monotonic()

        def finish(case: Case) -> None:
            if case.moment == "scheduled":
                case.start_worker("w1")
            recover(case, since, "prefect killed")

        at_once(finish, made)
    report("prefect killed")


def test_a_worker_killed_at_each_moment_of_a_run_leaves_its_work_to_another(
    parts: Parts, prefect: PrefectRest
) -> None:
    """Each case's worker (and its flow run process) SIGKILLed with the run held at a moment;
    a new worker for the pool takes the work over: the stuck run is replaced, the claim is
    made again, the fine-tune taken over once its lease runs out, its registration finished
    from its checkpoint without a second version."""
    moments = [("submitting", "sqlite")]
    moments += [(m, b) for m in ("applying", "finetuning", "registering") for b in BOTH]
    with cases(moments, prefect, parts) as made:

        def kill_and_recover(case: Case) -> None:
            case.start_api()
            doomed = case.start_worker("w1")
            case.bring_to_hold()
            assert doomed.process is not None
            killed = kill_tree(doomed.process.pid)
            doomed.process.wait(timeout=10)
            assert len(killed) > 1, f"{case.label}: no flow run process was running"
            case.release(dead_client=True)
            if case.moment in ("finetuning", "registering"):
                held = case.feedback.store.finetunes()[0]
                assert (held.rows, held.finished) == (5, False), case.label
            since = time.monotonic()
            case.start_worker("w2")
            recover(case, since, "worker killed")
            if case.moment == "submitting":  # left PENDING by its dead worker: replaced
                assert case.stats()["runs"]["superseded"] >= 1
            if case.moment == "finetuning":  # the dead attempt's MLflow run is marked KILLED
                mlflow = case.feedback.client
                experiment = mlflow.get_experiment_by_name(case.feedback.experiment)
                assert experiment is not None
                runs = mlflow.search_runs([experiment.experiment_id], "tags.kind = 'finetune'")
                assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED", "KILLED"]

        at_once(kill_and_recover, made)
    report("worker killed")


def test_the_api_killed_mid_burst_loses_no_accepted_row(parts: Parts, prefect: PrefectRest) -> None:
    """20 suggestions from 10 clients, each with its Idempotency-Key, to the API of each
    backend; the API SIGKILLed once 5 are answered, and started again. Clients retry what got
    no answer (with the same key) until it is 202: every row is stored once and applied once,
    fine-tunes at 5..20."""
    moments = [("api", b) for b in BOTH]
    with cases(moments, prefect, parts) as made:

        def burst(case: Case) -> None:
            case.start_worker("w1")
            client = case.start_api()
            answers: dict[int, int] = {}
            cut: list[int] = []  # requests the kill left without an answer

            def send(i: int) -> None:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        response = client.post(
                            "/suggest", json=suggestion(i), headers={"Idempotency-Key": f"r{i}"}
                        )
                    except httpx.TransportError:
                        cut.append(i)
                    else:
                        if response.status_code == 202:
                            answers[i] = int(response.json()["id"])
                            return
                    time.sleep(0.1)
                raise AssertionError(f"{case.label}: suggestion {i} never accepted")

            with ThreadPoolExecutor(max_workers=10) as pool:
                futures = [pool.submit(send, i) for i in range(BURST)]
                wait(lambda: len(answers) >= BURST // 4, 60, f"{case.label}: no answers")
                assert case.api is not None
                assert case.api.process is not None
                os.kill(case.api.process.pid, signal.SIGKILL)
                case.api.process.wait(timeout=10)
                since = time.monotonic()
                assert 0 < len(answers) < BURST, f"{case.label}: the kill was not mid-burst"
                case.start_api()
                for future in futures:
                    future.result()
            assert len(set(answers.values())) == BURST, case.label  # one row per key, all 202
            assert cut, f"{case.label}: no request was cut by the kill"
            wait(
                lambda: case.done(BURST, BURST // 5),
                180,
                f"{case.label}: the burst not applied",
                0.2,
            )
            TIMINGS[f"api killed, {case.label}"] = time.monotonic() - since
            store = case.feedback.store
            with store.database.read() as conn:
                keys = conn.execute(select(feedback_table.c.key)).scalars().all()
            assert sorted(keys) == sorted(f"api:r{i}" for i in range(BURST)), case.label
            assert [(t.rows, t.outcome) for t in store.finetunes()] == [
                (n, Outcome.REGISTERED) for n in range(5, BURST + 1, 5)
            ], case.label

        at_once(burst, made)
    report("api killed")
