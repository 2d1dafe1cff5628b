"""scripts/k8s-e2e.sh run whole against a fake cluster (tests/k8s/fake_tools.py: a kubectl
whose port-forwards serve fakes of the API, Prometheus and the Prefect server; a Grafana on
the ingress port; `sleep` shortened): it passes when every check holds, fails when one does
not (the API's target down in Prometheus on every try), reaches Grafana with no DNS (none
answers here), and leaves no port-forward behind, whether it passed, failed or was stopped."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from iris_testing import k8s
from tests.k8s import fake_tools

pytestmark = pytest.mark.integration

SCRIPT = k8s.ROOT / "scripts" / "k8s-e2e.sh"
GRAFANA_HOST = "grafana.localtest.me"
GRAFANA_AUTH = "Basic " + base64.b64encode(b"admin:kps-grafana-value").decode()


@pytest.fixture(scope="module")
def ingress() -> Iterator[int]:
    """Grafana behind the ingress, on a free port: the dashboard for its host and admin only."""

    class Grafana(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            host = self.headers.get("host", "").split(":")[0]
            found = (
                host == GRAFANA_HOST
                and self.headers.get("authorization") == GRAFANA_AUTH
                and self.path == "/api/dashboards/uid/iris-mlops"
            )
            body = json.dumps({"dashboard": {"uid": "iris-mlops"}} if found else {}).encode()
            self.send_response(200 if found else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Grafana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@dataclass
class Run:
    code: int
    out: str
    leaked: dict[int, str]  # port-forwards still running after the script: pid -> Service
    forwards: dict[int, str]  # every port-forward that served


def run_e2e(tmp_path: Path, ingress: int, timeout_s: float = 120, **config: Any) -> Run:
    tools = tmp_path / "bin"
    env = fake_tools.install(tools, config, ("kubectl", "sleep"))
    env["INGRESS_PORT"] = str(ingress)
    script = subprocess.Popen(
        ["bash", str(SCRIPT), "kind-fake"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = script.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(script.pid, signal.SIGKILL)  # the script and all it started
        out, _ = script.communicate()
        pytest.fail(f"scripts/k8s-e2e.sh still running after {timeout_s} s:\n{out}")
    return finish(tools, script.returncode, out)


def finish(tools: Path, code: int, out: str) -> Run:
    forwards = fake_tools.forward_pids(tools)
    deadline = time.monotonic() + 3  # the trap's kill has been sent: give them time to end
    while any(fake_tools.alive(p) for p in forwards) and time.monotonic() < deadline:
        time.sleep(0.05)
    leaked = {p: s for p, s in forwards.items() if fake_tools.alive(p)}
    for pid in leaked:  # not left running on this machine
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return Run(code, out, leaked, forwards)


def test_the_script_passes_on_a_healthy_cluster_and_leaves_no_forward(
    tmp_path: Path, ingress: int
) -> None:
    run = run_e2e(tmp_path, ingress)
    assert run.code == 0, run.out
    assert "== all checks passed" in run.out
    assert 'ok: up{job="api"} == 1' in run.out
    assert "ok: dashboard iris-mlops in Grafana" in run.out
    assert sorted(run.forwards.values()) == ["iris-api", "kps-prometheus", "prefect-server"]
    assert not run.leaked, f"port-forwards left running: {run.leaked}"


def test_a_check_that_never_holds_fails(tmp_path: Path, ingress: int) -> None:
    """Prometheus says up == 0 on every try: the step fails (every retry runs the check)."""
    run = run_e2e(tmp_path, ingress, api_up="0")
    assert run.code == 1, run.out
    assert 'FAIL: up{job="api"} == 1 (not within 120 s, 40 tries)' in run.out
    assert 'ok: up{job="api"}' not in run.out
    assert "== the dashboard" not in run.out  # it stopped there
    assert not run.leaked, f"port-forwards left running: {run.leaked}"


def test_a_stopped_run_leaves_no_forward(tmp_path: Path, ingress: int) -> None:
    """Stopped (SIGTERM) while it waits, the script ends its port-forwards too."""
    tools = tmp_path / "bin"
    env = fake_tools.install(tools, {"api_up": "0"}, ("kubectl", "sleep"))
    env["INGRESS_PORT"] = str(ingress)
    script = subprocess.Popen(
        ["bash", str(SCRIPT), "kind-fake"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while len(fake_tools.forward_pids(tools)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake_tools.forward_pids(tools)) == 2  # the API's and Prometheus' forwards
    script.send_signal(signal.SIGTERM)
    out, _ = script.communicate(timeout=30)
    run = finish(tools, script.returncode, out)
    assert run.code != 0
    assert not run.leaked, f"port-forwards left running: {run.leaked}"


def test_a_forward_whose_kubectl_ends_fails_with_its_message(tmp_path: Path, ingress: int) -> None:
    """kubectl cannot listen (the port taken after it was chosen): the script says so and
    stops, instead of talking to whatever answers on that port."""
    tools = tmp_path / "bin"
    env = fake_tools.install(tools, {}, ("kubectl", "sleep"))
    env["INGRESS_PORT"] = str(ingress)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # free_port answers the busy port: the forward's kubectl cannot listen there
        fake_python = tools / "python3"
        fake_python.unlink()
        fake_python.write_text(
            f'#!/bin/sh\ncase "$*" in *getsockname*) echo {port};; '
            f'*) exec "{sys.executable}" "$@";; esac\n'
        )
        fake_python.chmod(0o755)
        done = subprocess.run(
            ["bash", str(SCRIPT), "kind-fake"], env=env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert (
        f"FAIL: port-forward to svc/iris-api (port {port}) ended: Unable to listen on port {port}"
        in out
    )
    assert "Iris-setosa" not in out  # no request went to the port's other listener
