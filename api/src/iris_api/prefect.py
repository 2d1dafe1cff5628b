"""Creating fine-tune flow runs through the Prefect REST API (no Prefect client library: the
API image stays small and the two calls are stable, documented endpoints).

The deployment id comes from `GET /api/deployments/name/{flow}/{deployment}` once and is cached;
a 404 on `create_flow_run` (the deployment was re-created) looks it up again. Prefect answers
503 when its database is busy (SQLite under concurrent writes, on purpose): those requests,
time-outs, dropped connections and 502/504 are retried with backoff, always with the same
idempotency key, so a retry never creates a second run; this process sends
IRIS_API_PREFECT_CONCURRENCY requests at a time (1: SQLite's one writer). Any failure is an
`Upstream` error, which the feedback outbox retries later (the rows are stored already).

Tests, benchmarks and `make screenshots` use `iris_testing.prefect_rest.PrefectRest` instead:
synchronous calls that clone deployments, list runs and wait until they are final; they never
create flow runs and never run in the serving process. This client is the only one in the API
image: async, one deployment, idempotency keys, a concurrency limit, every failure an
`Upstream` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import Gauge

from iris_api.errors import Upstream
from iris_api.settings import ApiSettings

log = logging.getLogger(__name__)

RETRIED = frozenset({502, 503, 504})
#: Prefect's state types, as `iris_feedback_flow_runs{state}` reports them.
STATE_TYPES = ("SCHEDULED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED")
#: A run in these has not started: it will apply every row stored before it does.
NOT_STARTED = frozenset({"SCHEDULED", "PENDING"})
#: A run in these has ended: it applies nothing more.
FINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
#: The name of the CANCELLED state a run that never started gets when another replaces it.
SUPERSEDED = "Superseded"


@dataclass(frozen=True, slots=True)
class FlowRun:
    id: str
    name: str
    state: str
    new: bool  # False when Prefect returned the run an earlier request created (same key)


@dataclass(frozen=True, slots=True)
class RunState:
    """A flow run as Prefect sees it at `read` time, and how long it has waited to start."""

    id: str
    name: str
    type: str  # Prefect's state type: SCHEDULED, PENDING, RUNNING, COMPLETED, ...
    state_name: str  # the state's own name: Late, Submitting, Superseded, ...
    waiting_s: float  # not started yet: since its start time (SCHEDULED) or its claim (PENDING)

    @property
    def started(self) -> bool:
        return self.type not in NOT_STARTED

    @classmethod
    def of(cls, run: dict[str, Any], now: datetime) -> RunState:
        state = run.get("state") or {}
        kind = str(state.get("type", ""))
        since: datetime | None = None
        if kind == "SCHEDULED":  # waiting for its start time first, then for a worker
            since = _instant(run.get("expected_start_time") or state.get("timestamp"))
        elif kind == "PENDING":  # a worker claimed it and is starting it
            since = _instant(state.get("timestamp"))
        return cls(
            id=str(run["id"]),
            name=str(run.get("name", "")),
            type=kind,
            state_name=str(state.get("name", "")),
            waiting_s=max(0.0, (now - since).total_seconds()) if since else 0.0,
        )

    def stats(self, start_timeout_s: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.type,
            "state_name": self.state_name,
            "waiting_s": round(self.waiting_s, 3),
            "stuck": not self.started and self.waiting_s > start_timeout_s,
        }


class PrefectRuns:
    def __init__(self, settings: ApiSettings) -> None:
        self.url = settings.prefect_url
        self.flow, _, self.deployment = settings.feedback_deployment.partition("/")
        self.retries = settings.prefect_retries
        self.timeout_s = settings.prefect_timeout_s
        self._client: httpx.AsyncClient | None = None
        self._deployment_id: str | None = None
        self._lookup = asyncio.Lock()
        # A Prefect server on SQLite takes one write at a time and answers the others 503 at
        # once: queue them here instead.
        self._slots = asyncio.Semaphore(settings.prefect_concurrency)

    @property
    def name(self) -> str:
        return f"{self.flow}/{self.deployment}"

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                timeout=self.timeout_s,
                # Prefect's uvicorn drops idle connections after 5 s: let ours go first, so a
                # request is not written into a connection the server is closing.
                limits=httpx.Limits(keepalive_expiry=2.0),
            )
        return self._client

    async def create(self, parameters: dict[str, Any], key: str | None = None) -> FlowRun:
        """A flow run of the deployment with `parameters`; `key` makes the call idempotent
        (default: a fresh one, shared by this call's retries)."""
        body = {"parameters": parameters, "idempotency_key": key or str(uuid.uuid4())}
        deployment_id = await self._id(refresh=False)
        response = await self._send("POST", f"/deployments/{deployment_id}/create_flow_run", body)
        if response.status_code == 404:  # re-created under a new id since we cached it
            deployment_id = await self._id(refresh=True)
            response = await self._send(
                "POST", f"/deployments/{deployment_id}/create_flow_run", body
            )
        if response.status_code not in (200, 201):
            raise Upstream(
                f"Prefect refused the flow run of {self.name}: "
                f"HTTP {response.status_code} {_detail(response)}",
                status=502,
            )
        run = _json(response, self.url)
        try:
            return FlowRun(
                id=str(run["id"]),
                name=str(run.get("name", "")),
                state=str((run.get("state") or {}).get("type", "SCHEDULED")),
                new=response.status_code == 201,
            )
        except (KeyError, TypeError) as e:
            raise Upstream(f"Prefect at {self.url} answered without a flow run id", 502) from e

    async def read(self, run_id: str) -> RunState | None:
        """The run's state now; None when Prefect cannot say (unreachable, busy, no such run)."""
        try:
            response = await self._send("GET", f"/flow_runs/{run_id}")
        except Upstream:
            return None
        if response.status_code != 200:
            return None
        try:
            return RunState.of(_json(response, self.url), _server_now(response))
        except (Upstream, KeyError, TypeError, ValueError):
            return None

    async def supersede(self, run: RunState, message: str) -> bool:
        """Move a run that never started to CANCELLED (named "Superseded") with `message`, so
        nobody starts it later and the Prefect UI says why; forced, because Prefect's rules
        would let a worker that claimed it (PENDING) go on. False when Prefect refused or could
        not be reached (the caller goes on without it: a new run does not depend on it)."""
        body = {
            "state": {"type": "CANCELLED", "name": SUPERSEDED, "message": message[:2000]},
            "force": True,
        }
        try:
            response = await self._send("POST", f"/flow_runs/{run.id}/set_state", body)
        except Upstream as e:
            log.warning("could not mark flow run %s superseded: %s", run.id, e.detail)
            return False
        if response.status_code not in (200, 201):
            log.warning(
                "Prefect refused to mark flow run %s superseded: HTTP %d %s",
                run.id,
                response.status_code,
                _detail(response),
            )
            return False
        return True

    async def run_counts(self) -> dict[str, int]:
        """Flow runs of the deployment in Prefect, by state type (for the metrics)."""
        deployment_id = await self._id(refresh=False)
        counts = {}
        for state in STATE_TYPES:
            response = await self._send(
                "POST",
                "/flow_runs/count",
                {
                    "deployments": {"id": {"any_": [deployment_id]}},
                    "flow_runs": {"state": {"type": {"any_": [state]}}},
                },
            )
            if response.status_code != 200:
                raise Upstream(f"Prefect could not count runs: HTTP {response.status_code}", 502)
            try:
                counts[state] = int(response.json())
            except (ValueError, TypeError) as e:
                raise Upstream("Prefect answered a count that is not a number", 502) from e
        return counts

    async def watch(self, gauge: Gauge, interval_s: float) -> None:
        """Every `interval_s`, the deployment's flow runs by state into `gauge` (so failing
        fine-tunes can alert); a failed check is logged and tried again next time."""
        while True:
            try:
                for state, n in (await self.run_counts()).items():
                    gauge.labels(state).set(n)
            except Upstream as e:
                log.info("flow run counts unavailable: %s", e.detail)
            await asyncio.sleep(interval_s)

    async def _id(self, refresh: bool) -> str:
        async with self._lookup:  # one look-up at a time; the others use its answer
            if refresh or self._deployment_id is None:
                path = f"/deployments/name/{self.flow}/{self.deployment}"
                response = await self._send("GET", path)
                if response.status_code == 404:
                    self._deployment_id = None
                    raise Upstream(
                        f"Prefect at {self.url} has no deployment {self.name}: "
                        "deploy it (`make up` does; see prefect.yaml)",
                    )
                if response.status_code != 200:
                    raise Upstream(
                        f"Prefect could not look up {self.name}: "
                        f"HTTP {response.status_code} {_detail(response)}",
                        status=502,
                    )
                found = _json(response, self.url).get("id")
                if not isinstance(found, str):
                    raise Upstream(f"Prefect at {self.url} answered without a deployment id", 502)
                self._deployment_id = found
            return self._deployment_id

    async def _send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """The request, retried while Prefect is busy or slow: exponential backoff from
        0.2 s, at most 3 s, with jitter so that concurrent requests spread out."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                async with self._slots:
                    response = await self.client.request(method, path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                raise Upstream(f"Prefect at {self.url} is unreachable ({type(e).__name__})") from e
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                # The request may or may not have arrived: the same idempotency key makes
                # sending it again safe.
                if last:
                    raise Upstream(
                        f"Prefect at {self.url} did not answer ({type(e).__name__}) after "
                        f"{attempt + 1} tries"
                    ) from e
            except httpx.HTTPError as e:
                raise Upstream(f"Prefect at {self.url} is unreachable ({type(e).__name__})") from e
            else:
                if response.status_code not in RETRIED or last:
                    if response.status_code in RETRIED:
                        raise Upstream(
                            f"Prefect at {self.url} is busy (HTTP {response.status_code} after "
                            f"{attempt + 1} tries)"
                        )
                    return response
            delay = min(3.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.5)  # noqa: S311
            log.info("Prefect busy or slow on %s %s: retry in %.2f s", method, path, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _json(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as e:
        raise Upstream(f"Prefect at {url} answered with something other than JSON", 502) from e
    if not isinstance(data, dict):
        raise Upstream(f"Prefect at {url} answered with something other than an object", 502)
    return data


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 time from Prefect, aware (UTC when it names no zone)."""
    if not isinstance(value, str):
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _server_now(response: httpx.Response) -> datetime:
    """Prefect's clock when it answered (its Date header), so a run's age does not depend on
    how far this machine's clock is from the server's; this machine's clock without one."""
    date = response.headers.get("date")
    if date:
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(date).astimezone(UTC)
    return datetime.now(UTC)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:300]
    except (ValueError, AttributeError):
        return response.text[:300]
