"""`iris-stack` without servers: settings errors, stale pid files, stopping a process group."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iris_stack.process import Service, ServiceError, alive
from iris_testing.ports import free_port

BIN = Path(sys.executable).parent


def stack(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "iris-stack", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "Input should be a valid integer"), ("70000", "less than or equal to 65535")],
)
def test_a_bad_setting_names_its_variable(value: str, message: str) -> None:
    result = stack("up", env={"IRIS_MLFLOW_PORT": value})
    assert result.returncode == 2
    assert f"IRIS_MLFLOW_PORT={value!r}: " in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_down_clears_stale_pid_files(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "mlflow.pid").write_text(f"{dead.pid}\n")
    result = stack("down", env={"IRIS_STATE_DIR": str(tmp_path)})
    assert result.returncode == 0
    assert "nothing to stop" in result.stdout
    assert not (tmp_path / "mlflow.pid").exists()


def test_status_says_down_when_nothing_answers(tmp_path: Path) -> None:
    result = stack("status", env={"IRIS_MLFLOW_PORT": str(free_port())})
    assert result.returncode == 1
    assert "down" in result.stdout


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
