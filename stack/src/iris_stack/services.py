"""Start, check and stop the local services as real processes on 127.0.0.1.

Used by `iris-stack` (the embedded default), by the test fixtures and by the benchmarks, so the
three run the services exactly the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LOOPBACK = "127.0.0.1"


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """True when `url` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310
            return 200 <= r.status < 300  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ServiceError(RuntimeError):
    """A service did not start, or stopped while we waited for it."""


@dataclass
class Service:
    """One long-running process, started detached in its own process group."""

    name: str
    argv: list[str]
    health_url: str
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    stop_signals: int = 1  # SIGTERMs it needs to stop (a Prefect worker wants two)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,  # its own process group: stop() reaches its children
            )
        return self.process.pid

    def wait_healthy(self, timeout_s: float, url: str | None = None) -> None:
        """Until `url` (default: the health URL) answers 2xx; ServiceError with the log's tail
        if the process exits first or the time runs out."""
        url = url or self.health_url
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.process.returncode} before answering "
                    f"{url}; last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            if answers(url):
                return
            time.sleep(0.25)
        raise ServiceError(
            f"{self.name} did not answer {url} within {timeout_s:.0f} s; "
            f"last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is not None:
            stop_group(self.process.pid, grace_s, self.stop_signals)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def stop_group(pid: int, grace_s: float = 10.0, signals: int = 1) -> bool:
    """SIGTERM the process group led by `pid` (`signals` times, for programs that want a second
    one), wait up to `grace_s`, then SIGKILL. Returns True if something was running."""
    if not alive(pid):
        return False
    for _ in range(signals):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        time.sleep(0.2)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def bin_path(name: str) -> str:
    """An executable of this virtual environment (beside the running interpreter)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def mlflow_server(state_dir: Path, port: int, host: str = LOOPBACK) -> Service:
    """A lean MLflow tracking server: SQLite and served artifacts under `state_dir`, one worker,
    no job execution (about 0.5 GB instead of 3 GB)."""
    state_dir.mkdir(parents=True, exist_ok=True)
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
            "--backend-store-uri",
            f"sqlite:///{(state_dir / 'mlflow.db').resolve()}",
            "--artifacts-destination",
            str((state_dir / "artifacts").resolve()),
        ],
        health_url=f"http://{host}:{port}/health",
        log_path=state_dir / "mlflow.log",
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"},
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
        health_url=f"http://{host}:{port}/v2/health/live",
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


#: Prefect without usage reports, quiet about its own update checks.
PREFECT_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def prefect_server(state_dir: Path, port: int, host: str = LOOPBACK) -> Service:
    """`prefect server start`: API and UI on one port, SQLite and settings under `state_dir`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    home = state_dir.resolve()
    return Service(
        name="prefect",
        argv=[bin_path("prefect"), "server", "start", "--host", host, "--port", str(port)],
        health_url=f"http://{host}:{port}/api/health",
        log_path=state_dir / "prefect.log",
        env={
            **PREFECT_ENV,
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
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
        health_url=f"http://{host}:{health_port}/health",
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


def prometheus_config(
    source: Path, api_target: str, dest: Path, scrape_interval: str | None = None
) -> Path:
    """`source` (the repository's prometheus.yml) with the API at `api_target` (host:port),
    rule files made absolute and, if given, another scrape interval; written to `dest`."""
    config = yaml.safe_load(source.read_text())
    config["rule_files"] = [str((source.parent / f).resolve()) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        if job["job_name"] == "api":
            job["static_configs"] = [{"targets": [api_target]}]
            if scrape_interval:
                job["scrape_interval"] = scrape_interval
    if scrape_interval:
        config["global"]["scrape_interval"] = scrape_interval
        config["global"]["evaluation_interval"] = scrape_interval
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


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
        health_url=f"http://{host}:{port}/-/ready",
        log_path=state_dir / "prometheus.log",
    )


def run_prefect(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> str:
    """A `prefect` CLI command (this environment's); its output, or ServiceError with it."""
    result = subprocess.run(
        [bin_path("prefect"), "--no-prompt", *args],
        env={**os.environ, **env, "COLUMNS": "200"},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"`prefect {' '.join(args)}` failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr).strip()[-3000:]}"
        )
    return result.stdout


def deploy_local(api_url: str, home: Path, pool: str, project: Path) -> None:
    """The process work pool `pool` (created or reset) and the `local` deployment of
    `project`/prefect.yaml in it: what the local worker runs."""
    env = prefect_env(api_url, home)
    run_prefect("work-pool", "create", pool, "--type", "process", "--overwrite", env=env)
    run_prefect(
        "deploy", "--prefect-file", str(project / "prefect.yaml"), "--name", "local",
        "--pool", pool, env=env, cwd=project,
    )  # fmt: skip


def wait_pool_ready(api_url: str, pool: str, timeout_s: float) -> None:
    """Until Prefect says a worker polls `pool` (status READY)."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/work_pools/{pool}", timeout=2) as r:  # noqa: S310
                status = json.loads(r.read()).get("status") or "unknown"
        except (urllib.error.URLError, OSError, ValueError):
            status = "unreachable"
        if status == "READY":
            return
        time.sleep(0.25)
    raise ServiceError(
        f"work pool {pool!r} has no polling worker after {timeout_s:.0f} s: {status}"
    )


def ready_url(api: Service) -> str:
    """The API's readiness probe: 200 once a model is loaded."""
    return api.health_url.replace("/v2/health/live", "/v2/health/ready")


@contextlib.contextmanager
def running(service: Service, timeout_s: float = 120.0) -> Iterator[Service]:
    """Start `service`, wait until it answers, stop it (group, grace, kill) on the way out."""
    service.start()
    try:
        service.wait_healthy(timeout_s)
        yield service
    finally:
        service.stop()
