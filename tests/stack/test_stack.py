"""`iris-stack` without servers: settings errors, stale pid files, what `status` reports (against
stand-ins answering on loopback: HTTP, and PostgreSQL's first handshake), stopping a process
group. The commands run in this process; tests/stack/test_pipeline.py runs them as processes against
the real services."""

from __future__ import annotations

import socket
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from iris_stack.cli import app
from iris_stack.process import Service, ServiceError, alive
from iris_testing.ports import free_port


def stack(*args: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "Input should be a valid integer"), ("70000", "less than or equal to 65535")],
)
def test_a_bad_setting_names_its_variable(value: str, message: str) -> None:
    result = stack("up", env={"IRIS_MLFLOW_PORT": value})
    assert result.exit_code == 2, result.exception  # 1 would be an exception nobody handled
    assert f"IRIS_MLFLOW_PORT={value!r}: " in result.stderr
    assert message in result.stderr


def test_down_clears_stale_pid_files(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "mlflow.pid").write_text(f"{dead.pid}\n")
    result = stack("down", env={"IRIS_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 0
    assert "nothing to stop" in result.stdout
    assert not (tmp_path / "mlflow.pid").exists()


#: What `status` asks each service, and the setting that moves its port.
PROBES = {
    "mlflow": ("IRIS_MLFLOW_PORT", "/health"),
    "prefect": ("IRIS_PREFECT_PORT", "/api/health"),
    "worker": ("IRIS_WORKER_HEALTH_PORT", "/health"),
    "api": ("IRIS_API_PORT", "/v2/health/ready"),  # ready (a model loaded), not just live
    "prometheus": ("IRIS_PROMETHEUS_PORT", "/-/ready"),
}


class StandIn(ThreadingHTTPServer):
    """Answers 200 on the paths in `healthy`, 404 elsewhere; records what it was asked."""

    healthy: set[str]
    asked: list[str]

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class StandInHandler(BaseHTTPRequestHandler):
    server: StandIn

    def do_GET(self) -> None:
        self.server.asked.append(self.path)
        self.send_response(200 if self.path in self.server.healthy else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn(("127.0.0.1", 0), StandInHandler)
    server.healthy, server.asked = set(), []
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def status(
    tmp_path: Path, ports: dict[str, int], prometheus: bool = True, postgres: int | None = None
) -> Result:
    """`iris-stack status` with every service at `ports` (none at the usual ones), a
    `prometheus` on PATH or not (it is only looked up, never run), and with a port for
    `postgres`, IRIS_DATABASE=postgres."""
    bin_dir = tmp_path / ("bin" if prometheus else "empty-bin")
    bin_dir.mkdir(exist_ok=True)
    if prometheus:
        (bin_dir / "prometheus").write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / "prometheus").chmod(0o755)
    env = {"PATH": str(bin_dir), "IRIS_HOST": "127.0.0.1"}
    env |= {setting: str(ports[name]) for name, (setting, _) in PROBES.items()}
    env |= {"IRIS_DATABASE": "sqlite", "IRIS_STATE_DIR": str(tmp_path / "state")}
    if postgres is not None:
        env |= {"IRIS_DATABASE": "postgres", "IRIS_POSTGRES_PORT": str(postgres)}
    return stack("status", env=env)


def reported(result: Result) -> dict[str, str]:
    """{service: "up" or "down"}, as `status` prints them."""
    return {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines()}


def test_status_names_every_service_down_when_nothing_answers(tmp_path: Path) -> None:
    ports = {name: free_port() for name in PROBES}
    result = status(tmp_path, ports)
    assert result.exit_code == 1
    assert reported(result) == dict.fromkeys(PROBES, "down")
    for line in result.stdout.splitlines():
        name, where = line.split()[:2]
        if name != "worker":  # the worker is shown by its pool
            assert where.startswith(f"http://127.0.0.1:{ports[name]}"), line


@pytest.mark.parametrize("name", list(PROBES))
def test_status_reports_the_one_answering_service_up_and_the_others_down(
    name: str, stand_in: StandIn, tmp_path: Path
) -> None:
    path = PROBES[name][1]
    stand_in.healthy = {path}
    ports = {other: free_port() for other in PROBES} | {name: stand_in.port}
    result = status(tmp_path, ports)
    assert result.exit_code == 1
    assert reported(result) == {other: "up" if other == name else "down" for other in PROBES}
    assert stand_in.asked == [path]


def test_status_exits_0_when_every_service_answers_its_probe(
    stand_in: StandIn, tmp_path: Path
) -> None:
    stand_in.healthy = {path for _, path in PROBES.values()}
    result = status(tmp_path, dict.fromkeys(PROBES, stand_in.port))
    assert result.exit_code == 0, result.stdout
    assert reported(result) == dict.fromkeys(PROBES, "up")


def test_status_leaves_prometheus_out_where_up_would_not_start_it(
    stand_in: StandIn, tmp_path: Path
) -> None:
    stand_in.healthy = {path for _, path in PROBES.values()}
    result = status(tmp_path, dict.fromkeys(PROBES, stand_in.port), prometheus=False)
    assert result.exit_code == 0, result.stdout
    assert reported(result) == dict.fromkeys(["mlflow", "prefect", "worker", "api"], "up")


class PgStandIn(socketserver.ThreadingTCPServer):
    """Answers like a PostgreSQL server up to its password request (enough for pg_isready,
    the probe `status` uses); counts the connections that got that far."""

    daemon_threads = True
    startups = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class PgStandInHandler(socketserver.BaseRequestHandler):
    server: PgStandIn
    SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104

    def handle(self) -> None:
        while True:
            head = self.request.recv(8, socket.MSG_WAITALL)
            if len(head) < 8:
                return
            length, code = struct.unpack("!ii", head)
            self.request.recv(length - 8, socket.MSG_WAITALL)
            if code in (self.SSL_REQUEST, self.GSSENC_REQUEST):
                self.request.sendall(b"N")  # no encryption: go on in the clear
                continue
            self.server.startups += 1
            self.request.sendall(b"R" + struct.pack("!ii", 8, 3))  # a cleartext password, please
            return


@pytest.fixture
def pg_stand_in() -> Iterator[PgStandIn]:
    server = PgStandIn(("127.0.0.1", 0), PgStandInHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_with_postgres_status_reports_the_cluster_down_when_nothing_answers(
    stand_in: StandIn, tmp_path: Path
) -> None:
    stand_in.healthy = {path for _, path in PROBES.values()}
    port = free_port()
    result = status(tmp_path, dict.fromkeys(PROBES, stand_in.port), postgres=port)
    assert result.exit_code == 1, result.stdout
    assert reported(result) == {"postgres": "down", **dict.fromkeys(PROBES, "up")}
    assert result.stdout.splitlines()[0].split()[:2] == [
        "postgres",
        f"postgresql://127.0.0.1:{port}",
    ]


def test_with_postgres_status_asks_the_cluster_with_pg_isready(
    stand_in: StandIn, pg_stand_in: PgStandIn, tmp_path: Path
) -> None:
    stand_in.healthy = {path for _, path in PROBES.values()}
    result = status(tmp_path, dict.fromkeys(PROBES, stand_in.port), postgres=pg_stand_in.port)
    assert result.exit_code == 0, result.stdout
    assert reported(result) == {"postgres": "up", **dict.fromkeys(PROBES, "up")}
    assert pg_stand_in.startups >= 1


def test_stop_reaches_the_whole_process_group(tmp_path: Path) -> None:
    service = Service(
        name="sleeper",
        argv=["bash", "-c", f"sleep 300 & echo $! > {tmp_path}/child.pid; wait"],
        health_url="http://127.0.0.1:1/",
        log_path=tmp_path / "sleeper.log",
    )
    pid = service.start()
    child_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 10
    while not (child_file.exists() and child_file.read_text().strip()):
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(child_file.read_text())
    assert alive(child)
    assert alive(pid)
    service.stop(grace_s=5)  # stop_group on the group it leads, then reap
    assert not alive(pid)
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_a_service_that_exits_early_shows_its_log(tmp_path: Path) -> None:
    service = Service(
        name="broken",
        argv=["bash", "-c", "echo 'address already in use' >&2; exit 3"],
        health_url=f"http://127.0.0.1:{free_port()}/health",
        log_path=tmp_path / "broken.log",
    )
    service.start()
    with pytest.raises(ServiceError, match=r"(?s)exited with code 3.*address already in use"):
        service.wait_healthy(timeout_s=30)
