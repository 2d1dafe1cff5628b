"""Holding a flow run at one moment, so a test can kill something exactly then: between the
worker's claim and the run's start, inside the claim of pending rows, at a chosen MLflow call.

Each hold is a real part put in the run's way, nothing patched into the code under test:

- `HeldStart`: the engine command of a process worker's job (the `command` job variable),
  which waits for a release before it becomes `python -m prefect.engine`. The run is PENDING
  meanwhile: claimed by a worker that is "submitting" it.
- `StoreLock`: the feedback store's rows lock taken by the test, so a run's claim of the
  pending rows waits inside its transaction (SQLite's write lock, PostgreSQL's advisory lock).
- `MlflowGate`: a reverse proxy in front of MLflow that holds the first request matching a
  rule, before it goes on or after MLflow answered it (MLflow has done the work, the client
  has not heard).

Every hold says when the run reached it (`wait_arrived`) and lets go with `release()`; a test
kills Prefect, a worker or the API between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn
from sqlalchemy import text

from iris_core.feedback.database import ROWS_LOCK, Database, Location
from iris_testing.ports import free_port

#: The program a held run executes first (by the worker's Python): it notes its arrival and
#: waits for the release file, then becomes the Prefect engine in the same process.
HOLD_PROGRAM = """\
import os, sys, time
folder = sys.argv[1]
open(os.path.join(folder, "arrived-" + os.environ["PREFECT__FLOW_RUN_ID"]), "w").close()
while not os.path.exists(os.path.join(folder, "release")):
    time.sleep(0.05)
os.execv(sys.executable, [sys.executable, "-m", "prefect.engine"])
"""


def wait(condition: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} (after {timeout_s:g} s)")
        time.sleep(interval_s)


@dataclass
class HeldStart:
    """Runs of a deployment whose job variables carry `job_variables` wait, PENDING, until
    `release()`; after it (the file stays), every run starts at once."""

    folder: Path
    python: Path  # the worker's environment's Python

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "hold.py").write_text(HOLD_PROGRAM)

    @property
    def job_variables(self) -> dict[str, Any]:
        return {"command": f"{self.python} {self.folder / 'hold.py'} {self.folder}"}

    def arrived(self) -> list[str]:
        """The flow run ids that reached the hold (their process started)."""
        return sorted(p.name.removeprefix("arrived-") for p in self.folder.glob("arrived-*"))

    def wait_arrived(self, timeout_s: float = 60) -> str:
        wait(self.arrived, timeout_s, "no flow run reached the held start")
        return self.arrived()[0]

    def release(self) -> None:
        (self.folder / "release").touch()


class StoreLock:
    """The store's rows lock, held by a thread of the test until `release()`: a run's claim of
    the pending rows waits for it (as long as the store's busy timeout, 15 s)."""

    def __init__(self, url: str) -> None:
        self.location = Location.parse(url)
        self._db = Database(self.location)
        self._taken = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)
        self._thread.start()
        if not self._taken.wait(15):
            raise TimeoutError(f"could not take the rows lock of {self.location}")

    def _hold(self) -> None:
        with self._db.write(lock=ROWS_LOCK):
            self._taken.set()
            self._release.wait(120)

    def waiters(self, pid: int | None = None) -> bool:
        """Whether a claim waits for the lock: PostgreSQL says so (pg_locks); for SQLite,
        whose waiting is a busy loop in the waiting process, whether process `pid` has the
        database open (its run's next step after opening the store is the claim)."""
        if self.location.postgres:
            with self._db.engine.connect() as conn:
                waiting = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                ).scalar_one()
            return bool(waiting)
        if pid is None:
            raise ValueError("SQLite: name the process that should be waiting")
        database = os.path.realpath(str(self.location.url.database))
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if str(fd.readlink()) == database:
                        return True
        return False

    def release(self) -> None:
        self._release.set()
        self._thread.join(30)
        self._db.close()


@dataclass
class Hold:
    """One rule of an `MlflowGate`: the first request `method path` (path ending as given)
    waits `before` MLflow sees it, or after MLflow answered it."""

    method: str
    path: str
    before: bool
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    taken: bool = False
    dropped: bool = False  # released without passing it on (its client is gone)

    def matches(self, method: str, path: str) -> bool:
        return not self.taken and method == self.method and path.endswith(self.path)

    def wait_arrived(self, timeout_s: float = 120) -> None:
        if not self.arrived.wait(timeout_s):
            raise TimeoutError(f"no {self.method} {self.path} reached the gate in {timeout_s} s")

    def release(self, drop: bool = False) -> None:
        """Let it go on; `drop`: answer 502 instead (a held request is not passed on to
        MLflow, a held answer is not passed back), as for a client that was killed."""
        self.dropped = drop
        self.released.set()


class MlflowGate:
    """A reverse proxy for the MLflow server at `upstream` on a free loopback port (`url`):
    everything passes, except what a `hold` holds. Runs in a thread of the test (uvicorn)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.holds: list[Hold] = []
        self._lock = threading.Lock()
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        wait(lambda: self._server.started, 30, "the MLflow gate did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        for hold in self.holds:
            hold.release()
        self._server.should_exit = True
        self._thread.join(30)

    def hold(self, method: str, path: str, before: bool = True) -> Hold:
        rule = Hold(method, path, before)
        with self._lock:
            self.holds.append(rule)
        return rule

    def _take(self, method: str, path: str) -> Hold | None:
        with self._lock:
            for rule in self.holds:
                if rule.matches(method, path):
                    rule.taken = True
                    return rule
        return None

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"  # noqa: S101 (lifespan is off)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        method, path = scope["method"], scope["path"]
        rule = self._take(method, path)
        if rule is not None and rule.before:
            rule.arrived.set()
            await asyncio.to_thread(rule.released.wait)
            if rule.dropped:
                await _answer(send, 502, [], b"dropped by the gate")
                return
        headers = [
            (k.decode(), v.decode())
            for k, v in scope["headers"]
            if k.lower() not in (b"host", b"content-length", b"connection")
        ]
        query = scope.get("query_string", b"").decode()
        async with httpx.AsyncClient(timeout=120) as client:
            answer = await client.request(
                method, f"{self.upstream}{path}{'?' + query if query else ''}",
                headers=headers, content=body,
            )  # fmt: skip
        if rule is not None and not rule.before:
            rule.arrived.set()
            await asyncio.to_thread(rule.released.wait)
            if rule.dropped:
                await _answer(send, 502, [], b"dropped by the gate")
                return
        kept = [(k.encode(), v.encode()) for k, v in answer.headers.items() if k not in HOP]
        await _answer(send, answer.status_code, kept, answer.content)


#: Headers the gate does not pass back: it sends the whole (decoded) body with its own length.
HOP = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding"})


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def mlflow_gate(upstream: str) -> Iterator[MlflowGate]:
    with MlflowGate(upstream) as gate:
        yield gate


def python_of(bin_dir: Path) -> Path:
    """The Python of an environment's bin folder (the worker's, for `HeldStart`)."""
    for name in ("python", "python3"):
        if (bin_dir / name).exists():
            return bin_dir / name
    return Path(sys.executable)
