"""Real parts for the tests: an MLflow server, a UCI-like HTTP server, prepared data, a
registered model, a Prefect server with a process worker.

Two tiers (markers registered in pyproject.toml). `integration`, set explicitly on a test or a
module: it starts real services (MLflow, Prefect, uvicorn, Prometheus), runs our console
scripts as processes or builds a member's own environment. Every other test is marked `unit`
here (`make test-fast` runs them), and is held to it: a unit test that uses a fixture starting
a server stops the collection, and one that starts such a program fails.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from iris_core.params import Erratum, load_params
from iris_stack.deploy import deploy_local, wait_pool_ready
from iris_stack.postgres import Postgres
from iris_stack.process import Service, running
from iris_stack.services import mlflow_server, prefect_server, prefect_worker
from iris_testing.data import Archive, archive_server, make_zip, uci_lines
from iris_testing.feedback import FeedbackCase
from iris_testing.ports import free_port
from iris_testing.postgres import new_database, postgres_cluster
from iris_testing.prefect_rest import PrefectRest
from iris_testing.project import member_env
from iris_testing.training import Registered, own_registry, small_params
from iris_training.prepare import prepare
from iris_training.train import train

ROOT = Path(__file__).resolve().parents[1]
#: The work pool of the tests' Prefect server (the stack's is `iris-local`).
WORK_POOL = "iris-test"


def pytest_configure(config: pytest.Config) -> None:
    # No usage reports from the MLflow clients and servers the tests start.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")


#: Fixtures below that start a server or build a member's environment.
INTEGRATION_FIXTURES = frozenset(
    {
        "mlflow_url",
        "registered",
        "api_bin",
        "prefect",
        "finetune_bin",
        "worker",
        "feedback",
        "store_url",
        "postgres",
    }
)
#: Programs a unit test must not start: servers, tools that build environments or run the
#: pipeline, and our own console scripts (`iris-*`: each start imports the ML stack).
SERVER_PROGRAMS = frozenset(
    {
        "mlflow",
        "prefect",
        "prometheus",
        "uvicorn",
        "uv",
        "uv.sh",
        "dvc",
        "postgres",
        "pg_ctl",
        "initdb",
        "docker",
    }
)
#: subprocess.Popen itself (unit tests get a guarded subclass).
POPEN = subprocess.Popen


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test not marked `integration` as `unit`. A unit test must not use a fixture
    that starts a server: it would start before the test could be stopped, so stop here."""
    misplaced = []
    for item in items:
        if item.get_closest_marker("integration"):
            continue
        item.add_marker(pytest.mark.unit)
        uses = INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses:
            misplaced.append(f"  {item.nodeid} uses {', '.join(sorted(uses))}")
    if misplaced:
        raise pytest.UsageError(
            "mark these tests `integration` (their fixtures start servers):\n"
            + "\n".join(misplaced)
        )


def server_program(args: Any) -> str | None:
    """The name of the program `args` (as subprocess takes them) starts, if a unit test must
    not start it."""
    if isinstance(args, str | bytes | os.PathLike):  # one string: a command line
        words = os.fsdecode(args).split()
    else:
        words = [os.fsdecode(a) for a in args if isinstance(a, str | bytes | os.PathLike)]
    if not words:
        return None
    name = Path(words[0]).name
    if name.startswith("python") and "-m" in words[1:-1]:  # python -m uvicorn, ...
        name = words[words.index("-m") + 1].split(".")[0]
    return name if name in SERVER_PROGRAMS or name.startswith("iris-") else None


@pytest.fixture(autouse=True)
def _unit_tests_start_no_server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a unit test, starting a server program (or one of ours) through subprocess fails."""
    if request.node.get_closest_marker("integration"):
        return

    class Guarded(POPEN):  # type: ignore[type-arg]
        def __init__(self, args: Sequence[Any] | str, *rest: Any, **options: Any) -> None:
            program = server_program(args)
            if program is not None:
                pytest.fail(
                    f"a unit test started `{program}`: mark the test `integration`",
                    pytrace=False,
                )
            super().__init__(args, *rest, **options)

    monkeypatch.setattr(subprocess, "Popen", Guarded)


@pytest.fixture
def uci_server() -> Iterator[Archive]:
    """The UCI archive (with its two errors) from a local HTTP server; `payload` can be swapped."""
    with archive_server(make_zip(uci_lines())) as server:
        yield server


@pytest.fixture(scope="session")
def params_errata() -> list[Erratum]:
    return load_params(ROOT / "params.yaml").prepare.errata


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory, params_errata: list[Erratum]) -> Path:
    """data/{data,train,test}.csv and classes.json prepared from UCI-like data with its errors."""
    folder = tmp_path_factory.mktemp("data")
    (folder / "data.csv").write_text("\n".join(uci_lines()) + "\n")
    prepare(folder / "data.csv", folder, params_errata, test_size=0.2, seed=42)
    return folder


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (lean flags) on 127.0.0.1 and a free port, for the session."""
    state = tmp_path_factory.mktemp("mlflow")
    with running(mlflow_server(state, free_port())) as server:
        yield server.health_url.removesuffix("/health")


@pytest.fixture(scope="session")
def registered(
    data_dir: Path, mlflow_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Registered:
    """A small grid trained by the training code and registered under names of its own."""
    out = tmp_path_factory.mktemp("registered")
    params, reg = small_params(), own_registry()
    outcome = train(
        params,
        reg,
        data_dir,
        out / "metrics.json",
        out / "plots" / "confusion.csv",
        mlflow_url,
        n_jobs=2,
    )
    return Registered(params, reg, outcome, mlflow_url)


@pytest.fixture(scope="session")
def api_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The API's own environment, as its image installs it (no training stack, no MLflow)."""
    return member_env("iris-api", tmp_path_factory.mktemp("api-env") / "venv")


@pytest.fixture(scope="session")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectRest]:
    """A real Prefect server on 127.0.0.1 (SQLite), with the stack's process work pool and the
    `local` deployment from prefect.yaml, deployed as `make up` does."""
    state = tmp_path_factory.mktemp("prefect")
    with running(prefect_server(state, free_port())) as server:
        url = server.health_url.removesuffix("/health")
        deploy_local(url, state / "client", WORK_POOL, ROOT)
        client = PrefectRest(url)
        yield client
        client.close()


@pytest.fixture(scope="session")
def finetune_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fine-tuning flow's own environment, as its image installs it."""
    return member_env("iris-finetune", tmp_path_factory.mktemp("finetune-env") / "venv")


@pytest.fixture(scope="session")
def worker(
    prefect: PrefectRest,
    mlflow_url: str,
    finetune_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """A real process worker polling the pool, from the finetune environment; flow runs get
    the session's MLflow, and their other settings from their deployment."""
    folder = tmp_path_factory.mktemp("worker")
    service = prefect_worker(
        WORK_POOL,
        prefect.url,
        folder / "home",
        mlflow_url,
        free_port(),
        folder / "worker.log",
        env={"HOME": str(folder)},
        cwd=folder,
        bin_dir=finetune_bin,
    )
    with running(service, timeout_s=60):
        wait_pool_ready(prefect.url, WORK_POOL, 60)
        yield service


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty feedback store on each backend: a SQLite file, or a new database of the
    session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    return new_database(request.getfixturevalue("postgres"))


@pytest.fixture
def feedback(
    prefect: PrefectRest,
    worker: Service,
    registered: Registered,
    store_url: str,
    tmp_path: Path,
) -> Iterator[FeedbackCase]:
    """A deployment of its own (cloned from `local`, run by the session's worker) whose runs
    use a fresh feedback store on each backend and registered models of their own: copies of
    the session's champions."""
    case = FeedbackCase.create(prefect, registered, tmp_path, store_url=store_url)
    yield case
    case.store.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server for the session (the feedback store's role; a database per
    test with `iris_testing.postgres.new_database`)."""
    with postgres_cluster() as cluster:
        yield cluster
