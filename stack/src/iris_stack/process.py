"""One long-running process: start it detached in its own process group, wait until it
answers, stop the whole group (grace, then kill).

`iris-stack` starts every local service this way; so do the tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


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

    def healthy(self, url: str) -> bool:
        """Whether the service answers at `url` (2xx). A service that does not speak HTTP
        overrides this with its own check."""
        return answers(url)

    def wait_healthy(self, timeout_s: float, url: str | None = None) -> None:
        """Until `healthy(url)` (default: the health URL); ServiceError with the log's tail
        if the process exits first or the time runs out."""
        url = url or self.health_url
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.process.returncode} before answering "
                    f"{url}; last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            if self.healthy(url):
                return
            time.sleep(0.1)
        raise ServiceError(
            f"{self.name} did not answer {url} within {timeout_s:.0f} s; "
            f"last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is not None:
            stop_group(self.process.pid, grace_s, self.stop_signals)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1)


@contextlib.contextmanager
def running(service: Service, timeout_s: float = 120.0) -> Iterator[Service]:
    """Start `service`, wait until it answers, stop it (group, grace, kill) on the way out."""
    service.start()
    try:
        service.wait_healthy(timeout_s)
        yield service
    finally:
        service.stop()


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


def gone_within(pid: int, grace_s: float, poll_s: float = 0.1) -> bool:
    """Whether `pid` exits within `grace_s` (reaped if it is our child)."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not alive(pid):
            return True
        time.sleep(poll_s)
    return False


def stop_group(pid: int, grace_s: float = 10.0, signals: int = 1) -> bool:
    """SIGTERM the process group led by `pid` (`signals` times, for programs that want a second
    one), wait up to `grace_s`, then SIGKILL. Returns True if something was running."""
    if not alive(pid):
        return False
    for _ in range(signals):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        time.sleep(0.2)
    if not gone_within(pid, grace_s):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return True


def run_checked(
    args: Sequence[str | Path],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout_s: float = 300,
) -> str:
    """A command run to its end; its output, or ServiceError naming the command, its exit code
    and the end of what it printed."""
    done = subprocess.run(
        [str(a) for a in args],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise ServiceError(
            f"`{' '.join(str(a) for a in args)}` failed (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr).strip()[-4000:]}"
        )
    return done.stdout


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def bin_path(name: str) -> str:
    """An executable of this virtual environment (beside the running interpreter)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name
