"""The main job end to end, in a copy of the project: `iris-stack up` (a real MLflow server,
`dvc repro` of fetch/prepare/train), `up` again, the DVC remote round trip, `down`; the same
stack on a local PostgreSQL cluster (IRIS_DATABASE=postgres)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from sqlalchemy import select

from iris_core.feedback import FeedbackStore, Outcome
from iris_core.feedback.schema import feedback as feedback_table
from iris_core.registry import version_by_alias
from iris_stack import cli
from iris_stack.databases import local_cluster
from iris_stack.process import alive, answers
from iris_stack.settings import StackSettings
from iris_testing.data import Archive
from iris_testing.feedback import suggestion
from iris_testing.ports import free_port
from iris_testing.project import copy_pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DATA_OUTS = ("data/data.csv", "data/train.csv", "data/test.csv", "data/classes.json")
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def run(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )


def stack_env(
    state_dir: Path, port: int, api_port: int | None = None, prefect_port: int | None = None
) -> dict[str, str]:
    """The environment `make up` gives iris-stack, with its own state folder and ports."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "IRIS_MLFLOW_PORT": str(port),
        "IRIS_API_PORT": str(api_port or free_port()),
        "IRIS_PREFECT_PORT": str(prefect_port or free_port()),
        "IRIS_WORKER_HEALTH_PORT": str(free_port()),
        "IRIS_PROMETHEUS_PORT": str(free_port()),
        "IRIS_STATE_DIR": str(state_dir),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def environ(state_dir: Path, service: str) -> dict[str, str]:
    """The environment a service of the stack was started with (its pid file, /proc)."""
    pid = int((state_dir / f"{service}.pid").read_text())
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def project(tmp_path: Path, uci_server: Archive) -> Path:
    """The pipeline's files in a new git repository; the data comes from the local archive server
    and the grid is small. The DVC remote keeps its default: a folder beside the project."""
    dest = copy_pipeline(ROOT, tmp_path / "iris-mlops")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["url"] = uci_server.url
    params["train"].update(hidden_layers=[2], epochs=[300, 600])
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def test_up_twice_push_pull_and_down(project: Path, tmp_path: Path) -> None:
    port, api_port, prefect_port = free_port(), free_port(), free_port()
    env = stack_env(tmp_path / "state", port, api_port, prefect_port)
    stack = str(BIN / "iris-stack")
    url = f"http://127.0.0.1:{port}"
    api = f"http://127.0.0.1:{api_port}"
    prefect = f"http://127.0.0.1:{prefect_port}"
    try:
        first = run([stack, "up"], project, env)
        assert first.returncode == 0, first.stderr
        assert f"MLflow UI      {url}" in first.stdout
        assert f"API (Swagger)  {api}/docs" in first.stdout
        assert f"Prefect UI     {prefect}" in first.stdout
        if shutil.which("prometheus"):
            assert "prometheus: started" in first.stderr
            assert "Prometheus     http://127.0.0.1:" in first.stdout
        for name in ("mlflow", "prefect", "worker", "api"):
            assert f"{name}: started" in first.stderr
        answer = httpx.post(
            f"{api}/predict",
            json={"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "1"
        assert run([stack, "status"], project, env).returncode == 0

        # The API gets the feedback store (a SQLite file) and the token the summary points to.
        state = tmp_path / "state"
        token = (state / "feedback.token").read_text().strip()
        assert stat.S_IMODE((state / "feedback.token").stat().st_mode) == 0o600
        assert f"Suggest token  {state / 'feedback.token'} " in first.stdout
        assert token not in first.stdout + first.stderr
        api_env = environ(state, "api")
        assert api_env["IRIS_FEEDBACK_STORE_URL"] == f"sqlite:///{state / 'feedback.db'}"
        assert api_env["IRIS_API_FEEDBACK_TOKEN"] == token
        assert "IRIS_API_PREFECT_CONCURRENCY" not in api_env
        assert environ(state, "worker")["IRIS_FEEDBACK_STORE_URL"].startswith("sqlite:////")
        assert not (state / "postgres").exists()

        # Feedback is stored by the API, then applied by a run of the stack's Prefect worker.
        suggested = httpx.post(
            f"{api}/suggest",
            json={
                "sepal_length": 5.1,
                "sepal_width": 3.5,
                "petal_length": 1.4,
                "petal_width": 0.2,
                "class_name": "Iris-setosa",
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        assert suggested.status_code == 202, suggested.text
        with FeedbackStore.open(f"sqlite:///{tmp_path / 'state' / 'feedback.db'}") as store:
            deadline = time.monotonic() + 120
            while store.backlog(every=5).applied < 1:
                assert time.monotonic() < deadline, "no flow run applied the row"
                time.sleep(0.25)
        assert "IrisModel      version 1 @champion (test accuracy" in first.stdout
        assert "IrisDev        version 1 @champion (test accuracy" in first.stdout
        accuracy = float(first.stdout.split("Test accuracy")[1].split()[0])
        assert accuracy >= 0.9
        assert "mlflow: started" in first.stderr

        # The run's DVC data hash is the one dvc.lock recorded for prepare's output.
        lock = yaml.safe_load((project / "dvc.lock").read_text())
        lock_md5 = {o["path"]: o["md5"] for o in lock["stages"]["prepare"]["outs"]}
        champion = version_by_alias(url, "IrisModel", "champion")
        assert champion is not None
        import mlflow  # noqa: PLC0415

        tags = mlflow.MlflowClient(url).get_run(champion.run_id).data.tags
        assert tags["dvc.md5.train.csv"] == lock_md5["data/train.csv"]

        metrics = run([str(BIN / "dvc"), "metrics", "show", "--json"], project, env)
        assert metrics.returncode == 0, metrics.stderr
        assert json.loads(metrics.stdout)[""]["data"]["metrics.json"]["data"][
            "test_accuracy"
        ] == pytest.approx(accuracy, abs=1e-4)

        second = run([stack, "up"], project, env)
        assert second.returncode == 0, second.stderr
        for name in ("mlflow", "prefect", "worker", "api"):
            assert f"{name}: already answering" in second.stderr
        assert (state / "feedback.token").read_text().strip() == token
        assert "Data and pipelines are up to date." in second.stdout + second.stderr
        assert "IrisModel      version 1 @champion" in second.stdout  # nothing retrained
        # The flow's automation (zombie runs marked Crashed) exists once after two `up`s.
        automations = httpx.post(f"{prefect}/api/automations/filter", json={}).json()
        assert [a["name"] for a in automations] == [
            "iris-finetune crash runs whose heartbeats stopped"
        ]

        # The default remote (a folder beside the project) round trip.
        push = run([str(BIN / "dvc"), "push"], project, env)
        assert push.returncode == 0, push.stderr
        assert (project.parent / "iris-mlops-dvc-storage").is_dir()
        before = {name: md5(project / name) for name in DATA_OUTS}
        for name in DATA_OUTS:
            (project / name).unlink()
        shutil.rmtree(project / ".dvc" / "cache")
        pull = run([str(BIN / "dvc"), "pull"], project, env)
        assert pull.returncode == 0, pull.stderr
        assert {name: md5(project / name) for name in DATA_OUTS} == before
        status = run([str(BIN / "dvc"), "status"], project, env)
        assert "Data and pipelines are up to date." in status.stdout
    finally:
        down = run([stack, "down"], project, env)
    assert down.returncode == 0, down.stderr
    # The worker before the Prefect server it reports to, the API before what it calls.
    stopped = [line.split(":")[0] for line in down.stdout.splitlines() if "stopped" in line]
    started = ["prometheus"] if shutil.which("prometheus") else []
    assert stopped == [*started, "worker", "api", "prefect", "mlflow"]
    assert not answers(f"{prefect}/api/health")
    assert not answers(f"{url}/health")
    assert not answers(f"{api}/v2/health/live")
    assert "nothing to stop" in run([stack, "down"], project, env).stdout


#: Other names for everything params.yaml names: the whole stack must follow them.
RENAMED = {
    "experiment": "flowers",
    "onnx_model_name": "FlowerOnnx",
    "sklearn_model_name": "FlowerSklearn",
    "alias": "serving",
}


def test_renamed_models_are_served_fine_tuned_followed_and_retrained(
    project: Path, tmp_path: Path
) -> None:
    """params.yaml renames the experiment, both models and the alias: training registers them,
    the API serves them, five suggestions fine-tune them and the API follows the new version;
    a new MLflow state makes `up` train again under those names."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["registry"].update(RENAMED)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    api_port = free_port()
    env = stack_env(tmp_path / "a", free_port(), api_port) | {"IRIS_API_POLL_INTERVAL_S": "1"}
    stack = str(BIN / "iris-stack")
    api = f"http://127.0.0.1:{api_port}"
    try:
        first = run([stack, "up"], project, env)
        assert first.returncode == 0, first.stderr
        assert "FlowerOnnx     version 1 @serving" in first.stdout
        assert "FlowerSklearn  version 1 @serving" in first.stdout
        token = (tmp_path / "a" / "feedback.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=api, timeout=30, headers=headers) as client:
            assert client.get("/model").json()["name"] == "FlowerOnnx"
            for _ in range(5):
                suggested = client.post("/suggest", json=SETOSA | {"class_name": "Iris-setosa"})
                assert suggested.status_code == 202, suggested.text
            deadline = time.monotonic() + 120
            while client.get("/model").json()["version"] != "2":
                assert time.monotonic() < deadline, "the fine-tuned version was not served"
                time.sleep(0.5)
            assert client.post("/predict", json=SETOSA).json()["model_version"] == "2"
        tracking = f"http://127.0.0.1:{env['IRIS_MLFLOW_PORT']}"
        for name in ("FlowerOnnx", "FlowerSklearn"):
            tuned = version_by_alias(tracking, name, "serving")
            assert tuned is not None
            assert (tuned.version, tuned.tags["feedback_rows"]) == ("2", "5")
        import mlflow  # noqa: PLC0415

        experiment = mlflow.MlflowClient(tracking).get_experiment_by_name("flowers")
        assert experiment is not None
        assert run([stack, "down"], project, env).returncode == 0

        env = stack_env(tmp_path / "b", free_port())
        again = run([stack, "up"], project, env)
        assert again.returncode == 0, again.stderr
        assert "the registry has no version with alias 'serving' yet: retraining" in again.stderr
        assert "FlowerOnnx     version 1 @serving" in again.stdout
    finally:
        run([stack, "down"], project, env)


@contextlib.contextmanager
def reachable_state() -> Iterator[Path]:
    """A state folder the cluster's system user can enter (as root the server runs as
    `postgres`, and pytest's temporary folders are root's only); removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="iris-pgstack-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def first_column(port: int, pgpass: Path, database: str, sql: str) -> set[str]:
    """`sql`'s first column in `database`, as its role (the password from the stack's file)."""
    with psycopg.connect(
        host="127.0.0.1", port=port, dbname=database, user=database, passfile=str(pgpass)
    ) as conn:
        return {str(row[0]) for row in conn.execute(sql)}


def test_the_stack_on_postgres_keeps_everything_in_one_cluster(project: Path) -> None:
    """IRIS_DATABASE=postgres: `up` creates and starts a cluster under the state folder; MLflow
    and Prefect keep their data in it (no SQLite file of theirs), the API and the worker get
    the feedback store there; `down` stops the cluster last; the next `up` starts the same
    cluster with the same passwords and finds the registered models in it."""
    with reachable_state() as state:
        pg_port, port, api_port = free_port(), free_port(), free_port()
        env = stack_env(state, port, api_port)
        env |= {"IRIS_DATABASE": "postgres", "IRIS_POSTGRES_PORT": str(pg_port)}
        stack = str(BIN / "iris-stack")
        api = f"http://127.0.0.1:{api_port}"
        pgpass = state / "postgres.pgpass"
        try:
            first = run([stack, "up"], project, env)
            assert first.returncode == 0, first.stderr
            assert "postgres: created a cluster in" in first.stderr
            assert "postgres: started (pid" in first.stderr
            where = f"127.0.0.1:{pg_port}"
            assert f"Databases      PostgreSQL {where}: mlflow, prefect, feedback" in first.stdout
            assert f"DB passwords   {pgpass} (PGPASSFILE=" in first.stdout
            assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
            secrets = pgpass.read_text()
            passwords = [line.rsplit(":", 1)[1] for line in secrets.splitlines()[1:]]
            assert len(passwords) == 3
            assert not [p for p in passwords if p in first.stdout + first.stderr]
            answer = httpx.post(f"{api}/predict", json=SETOSA)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == "1"
            status = run([stack, "status"], project, env)
            assert status.returncode == 0, status.stdout
            assert f"postgres postgresql://{where}  up" in status.stdout

            # MLflow and Prefect really on PostgreSQL: their rows there, no SQLite file.
            assert not (state / "mlflow" / "mlflow.db").exists()
            assert not (state / "prefect" / "prefect.db").exists()
            models = first_column(pg_port, pgpass, "mlflow", "SELECT name FROM registered_models")
            assert models == {"IrisModel", "IrisDev"}
            deployments = first_column(pg_port, pgpass, "prefect", "SELECT name FROM deployment")
            assert deployments == {"local"}
            # The API and the flow runs share the store's URL; its role can build the schema.
            api_env = environ(state, "api")
            store_url = api_env["IRIS_FEEDBACK_STORE_URL"]
            assert store_url == f"postgresql://feedback:{passwords[2]}@{where}/feedback"
            assert environ(state, "worker")["IRIS_FEEDBACK_STORE_URL"] == store_url
            assert (
                api_env["IRIS_API_FEEDBACK_TOKEN"] == (state / "feedback.token").read_text().strip()
            )
            assert api_env["IRIS_API_PREFECT_CONCURRENCY"] == "4"
            with FeedbackStore.open(store_url) as store:
                assert store.backlog(every=5).pending == 0
            for log in state.rglob("*.log"):  # MLflow, Prefect, PostgreSQL, worker, API, ...
                assert not [p for p in passwords if p in log.read_text(errors="replace")], log

            # `down` goes by the pid files: it needs no IRIS_DATABASE to stop the cluster.
            sqlite_env = {k: v for k, v in env.items() if k != "IRIS_DATABASE"}
            down = run([stack, "down"], project, sqlite_env)
            assert down.returncode == 0, down.stderr
            stopped = [line.split(":")[0] for line in down.stdout.splitlines() if "stopped" in line]
            started = ["prometheus"] if shutil.which("prometheus") else []
            assert stopped == [*started, "worker", "api", "prefect", "mlflow", "postgres"]
            assert not local_cluster(StackSettings(state_dir=state, postgres_port=pg_port)).ready()
            assert not (state / "postgres" / "data" / "postmaster.pid").exists()  # a clean stop

            again = run([stack, "up"], project, env)
            assert again.returncode == 0, again.stderr
            assert "postgres: started (pid" in again.stderr
            assert "created a cluster" not in again.stderr
            assert "retraining" not in again.stderr  # the registry kept its models
            assert "IrisModel      version 1 @champion" in again.stdout
            assert pgpass.read_text() == secrets
            assert httpx.post(f"{api}/predict", json=SETOSA).status_code == 200
        finally:
            down = run([stack, "down"], project, env)
        assert down.returncode == 0, down.stderr
        assert "postgres: stopped" in down.stdout


# The stack starts the server detached and drops its Popen while it runs, on purpose.
@pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")
def test_a_cluster_killed_without_a_shutdown_starts_again() -> None:
    """A crash leaves the lock file (postmaster.pid) naming a dead server: the next `up`
    starts the cluster anyway, with the roles and passwords it had."""
    with reachable_state() as state:
        settings = StackSettings(state_dir=state, database="postgres", postgres_port=free_port())
        cluster = local_cluster(settings)
        try:
            urls = cli._start_postgres(settings)
            assert cli._start_postgres(settings) == urls  # running: reused
            pid = cluster.running_pid()
            assert pid is not None
            # Everything dies at once, as in a power cut: the server and its processes.
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            for victim in [pid, *map(int, children)]:
                os.kill(victim, signal.SIGKILL)
            os.waitpid(pid, 0)  # this process started it: reap it, as init would
            deadline = time.monotonic() + 10
            while any(alive(v) for v in [pid, *map(int, children)]):
                assert time.monotonic() < deadline, "the server survived SIGKILL"
                time.sleep(0.05)
            assert cluster.postmaster_pid() == pid  # the stale lock file
            assert cli._start_postgres(settings) == urls
            assert cluster.running_pid() not in (None, pid)
            assert cluster.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'mlflow'") == "1\n"
        finally:
            assert cli._stop_postgres(settings)


def test_no_accepted_row_is_stranded_when_prefect_dies_mid_burst_or_the_stack_stops(
    project: Path, tmp_path: Path
) -> None:
    """The embedded default as a user meets it: `up`; 60 suggestions from 30 clients with the
    token, Prefect's server SIGKILLed (its process group) 0.7 s into the burst, 10 more while
    it is down (all 202); `up` again: every row applied once, a fine-tune at each multiple of
    5, within the bound (the start timeout, or the stale period, plus the runs). Then the
    worker killed, 5 more stored with nobody to run them, `down` and `up`: applied too."""
    state = tmp_path / "state"
    api_port = free_port()
    env = stack_env(state, free_port(), api_port) | {
        # shorter than the defaults (60 s each), so that the bound is short too
        "IRIS_API_FEEDBACK_STALE_S": "10",
        "IRIS_API_FEEDBACK_START_TIMEOUT_S": "15",
        "IRIS_API_FEEDBACK_CHECK_S": "2",
        "IRIS_API_FEEDBACK_RATE_LIMIT": "1000/second",
    }
    stack = str(BIN / "iris-stack")
    try:
        assert (first := run([stack, "up"], project, env)).returncode == 0, first.stderr
        token = (state / "feedback.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        with (
            httpx.Client(
                base_url=f"http://127.0.0.1:{api_port}", timeout=60, headers=headers
            ) as client,
            FeedbackStore.open(f"sqlite:///{state / 'feedback.db'}") as store,
        ):
            prefect_pid = int((state / "prefect.pid").read_text())

            def send(i: int) -> int:
                answer = client.post("/suggest", json=suggestion(i))
                assert answer.status_code == 202, answer.text
                return int(answer.json()["id"])

            with ThreadPoolExecutor(max_workers=30) as clients:
                burst = clients.map(send, range(60))
                time.sleep(0.7)
                os.killpg(prefect_pid, signal.SIGKILL)
                ids = list(burst)
            ids += [send(i) for i in range(60, 70)]
            assert sorted(ids) == list(range(1, 71))  # all 202: stored
            again = run([stack, "up"], project, env)
            assert again.returncode == 0, again.stderr
            assert "prefect: started" in again.stderr
            since = time.monotonic()
            wait_applied(store, 70, 14, 240)
            recovered = time.monotonic() - since
            assert recovered < 15 + 10 + 120  # start timeout + a check + the runs, generously
            stats = client.get("/feedback/stats").json()
            assert stats["pending"] == 0

            worker_pid = int((state / "worker.pid").read_text())
            os.killpg(worker_pid, signal.SIGKILL)
            ids = [send(i) for i in range(70, 75)]
            assert ids == list(range(71, 76))
        assert run([stack, "down"], project, env).returncode == 0
        assert (third := run([stack, "up"], project, env)).returncode == 0, third.stderr
        with FeedbackStore.open(f"sqlite:///{state / 'feedback.db'}") as store:
            wait_applied(store, 75, 15, 120)
            with store.database.read() as conn:
                seqs = (
                    conn.execute(select(feedback_table.c.applied_seq).order_by(feedback_table.c.id))
                    .scalars()
                    .all()
                )
            assert seqs == list(range(1, 76))  # each row applied once, in acceptance order
            assert [(t.rows, t.outcome) for t in store.finetunes()] == [
                (n, Outcome.REGISTERED) for n in range(5, 76, 5)
            ]
        tracking = f"http://127.0.0.1:{env['IRIS_MLFLOW_PORT']}"
        import mlflow  # noqa: PLC0415

        for name in ("IrisModel", "IrisDev"):
            versions = mlflow.MlflowClient(tracking).search_model_versions(f"name = '{name}'")
            tuned = sorted(int(v.tags.get("feedback_rows", "0")) for v in versions)
            assert tuned == [0, *range(5, 76, 5)]  # one version per fine-tune, none twice
        print(f"recovered in {recovered:.1f} s")
    finally:
        run([stack, "down"], project, env)


def wait_applied(store: FeedbackStore, rows: int, finetunes: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        backlog = store.backlog(every=5)
        if backlog.applied >= rows and sum(backlog.finetunes.values()) >= finetunes:
            return
        assert time.monotonic() < deadline, f"{backlog.applied} rows applied, not {rows}"
        time.sleep(0.5)
