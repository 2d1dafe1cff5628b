"""The local services as `Service` recipes: a lean MLflow server, the prediction API, a Prefect
server and its process worker, Prometheus. Each binds to 127.0.0.1 by default and keeps its
state, log and settings under the folder it is given.

`iris-stack up` starts them; the tests and the benchmarks start the same recipes on free ports.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from iris_stack.process import Service, bin_path

LOOPBACK = "127.0.0.1"
#: Where each service says it is up (below its base URL; Prefect's below its API's).
MLFLOW_HEALTH = "/health"
PREFECT_HEALTH = "/health"
WORKER_HEALTH = "/health"
API_LIVE = "/v2/health/live"
API_READY = "/v2/health/ready"
PROMETHEUS_READY = "/-/ready"


def mlflow_server(
    state_dir: Path, port: int, host: str = LOOPBACK, backend_store_uri: str | None = None
) -> Service:
    """A lean MLflow tracking server: served artifacts under `state_dir`, its backend store a
    SQLite file there or `backend_store_uri` (given through the environment, so a password in
    it stays out of the process list), one worker, no job execution (about 0.5 GB instead of
    3 GB)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    store = (
        ["--backend-store-uri", f"sqlite:///{(state_dir / 'mlflow.db').resolve()}"]
        if backend_store_uri is None
        else []
    )
    return Service(
        name="mlflow",
        argv=[
            bin_path("mlflow"),
            "server",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
            *store,
            "--artifacts-destination",
            str((state_dir / "artifacts").resolve()),
        ],
        health_url=f"http://{host}:{port}{MLFLOW_HEALTH}",
        log_path=state_dir / "mlflow.log",
        env={
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            **({"MLFLOW_BACKEND_STORE_URI": backend_store_uri} if backend_store_uri else {}),
        },
    )


def api_server(
    port: int,
    tracking_uri: str,
    log_path: Path,
    host: str = LOOPBACK,
    env: Mapping[str, str] | None = None,
    bin_dir: Path | None = None,
    cwd: Path | None = None,
) -> Service:
    """The prediction API (`iris-api` from `bin_dir`, default this environment: uvicorn, one
    worker). Healthy = live; ready comes once it has loaded a model (`ready_url`)."""
    return Service(
        name="api",
        argv=[str(bin_dir / "iris-api") if bin_dir else bin_path("iris-api")],
        health_url=f"http://{host}:{port}{API_LIVE}",
        log_path=log_path,
        env={
            "IRIS_API_HOST": host,
            "IRIS_API_PORT": str(port),
            "IRIS_API_TRACKING_URI": tracking_uri,
            "ORT_DISABLE_TELEMETRY": "1",
            **(env or {}),
        },
        cwd=cwd,
    )


def ready_url(api: Service) -> str:
    """The API's readiness probe: 200 once a model is loaded."""
    return api.health_url.replace(API_LIVE, API_READY)


#: Prefect without usage reports, quiet about its own update checks.
PREFECT_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def prefect_server(
    state_dir: Path, port: int, host: str = LOOPBACK, database_url: str | None = None
) -> Service:
    """`prefect server start`: API and UI on one port, settings under `state_dir`, its
    database a SQLite file there or `database_url` (SQLAlchemy's form, asyncpg for
    PostgreSQL)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    home = state_dir.resolve()
    database_url = database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    return Service(
        name="prefect",
        argv=[bin_path("prefect"), "server", "start", "--host", host, "--port", str(port)],
        health_url=f"http://{host}:{port}/api{PREFECT_HEALTH}",
        log_path=state_dir / "prefect.log",
        env={
            **PREFECT_ENV,
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
            # the UI in the browser talks to this API (not to a default 127.0.0.1:4200)
            "PREFECT_UI_API_URL": f"http://{host}:{port}/api",
        },
    )


def prefect_env(api_url: str, home: Path) -> dict[str, str]:
    """What a Prefect client (CLI, worker) needs to talk to the server at `api_url`."""
    return {**PREFECT_ENV, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home.resolve())}


def prefect_worker(
    pool: str,
    api_url: str,
    home: Path,
    tracking_uri: str,
    health_port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    host: str = LOOPBACK,
    cwd: Path | None = None,
    bin_dir: Path | None = None,
) -> Service:
    """A process worker for `pool` (`prefect` from `bin_dir`, default this environment): each
    flow run is a subprocess in that environment, with MLflow at `tracking_uri` and `env`
    (feedback store, registry names). Polls every second; healthy = its healthcheck."""
    prefect = str(bin_dir / "prefect") if bin_dir else bin_path("prefect")
    return Service(
        name="worker",
        argv=[prefect, "worker", "start", "--pool", pool, "--with-healthcheck"],
        health_url=f"http://{host}:{health_port}{WORKER_HEALTH}",
        log_path=log_path,
        env={
            **prefect_env(api_url, home),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_WORKER_WEBSERVER_HOST": host,
            "PREFECT_WORKER_WEBSERVER_PORT": str(health_port),
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            **(env or {}),
        },
        cwd=cwd,
        stop_signals=2,  # the first SIGTERM asks it to finish; the second makes it exit
    )


def prometheus_server(config: Path, state_dir: Path, port: int, host: str = LOOPBACK) -> Service:
    """`prometheus` (from PATH: Debian's package) with `config`, its TSDB under `state_dir`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return Service(
        name="prometheus",
        argv=[
            shutil.which("prometheus") or "prometheus",
            f"--config.file={config.resolve()}",
            f"--storage.tsdb.path={(state_dir / 'data').resolve()}",
            f"--web.listen-address={host}:{port}",
            "--storage.tsdb.retention.time=7d",
        ],
        health_url=f"http://{host}:{port}{PROMETHEUS_READY}",
        log_path=state_dir / "prometheus.log",
    )
