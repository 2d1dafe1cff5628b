"""The Prefect REST calls the tests, the benchmarks and `make screenshots` make to drive and
inspect flow runs.

Why not the API's client (`iris_api.prefect.PrefectRuns`): the two want different things.

- The API's runs inside the serving process: async, one deployment, it *creates* flow runs
  (and counts them), each with an idempotency key so a retry never makes a second run, at most
  IRIS_API_PREFECT_CONCURRENCY requests at a time, a refused connection failing at once (the
  caller gets a 503 now rather than a wait), every failure turned into an `Upstream` error that
  the API answers as 502/503. It ships in the API image, so it holds nothing else.
- This one is synchronous orchestration from outside: it clones deployments, lists runs, waits
  until runs are final, deletes; it retries only Prefect's "busy" answers (503 while SQLite
  writes) and dropped keep-alive connections, then raises httpx's own errors so a test sees the
  status. It creates no flow runs, so it needs no idempotency keys (a deployment is upserted by
  name), and it makes one call at a time, so it needs no concurrency limit.

One client would have to be async and sync, fail fast and wait, raise `Upstream` and httpx
errors; and the API image would carry test orchestration. So two, each with its own retry loop.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

#: Prefect state types a flow run does not leave.
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


class PrefectRest:
    """A Prefect server's REST API at `url` (ending with /api), synchronously."""

    def __init__(self, url: str) -> None:
        self.url = url
        # Prefect's uvicorn drops idle connections after 5 s: expire ours first.
        self.http = httpx.Client(
            base_url=url, timeout=30, limits=httpx.Limits(keepalive_expiry=2.0)
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """One call, retried while Prefect's SQLite is busy (503 on purpose) or a kept-alive
        connection was dropped, then checked (httpx.HTTPStatusError on 4xx/5xx)."""
        for attempt in range(12):
            try:
                response = self.http.request(method, path, json=json)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                if attempt == 11:
                    raise
            else:
                if response.status_code != 503:
                    break
            time.sleep(min(2.0, 0.1 * 2**attempt))
        response.raise_for_status()
        return response

    def deployment(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/deployments/name/{name}").json()
        return found

    def clone_deployment(
        self,
        source: str,
        name: str,
        env: dict[str, str],
        pool: str | None = None,
        job_variables: dict[str, Any] | None = None,
    ) -> str:
        """A copy of deployment `source` (flow/deployment) named `name`, whose runs get `env`
        (settings of their own: feedback store, registry names) and `job_variables`, in work
        pool `pool` (default: the source's); its id."""
        d = self.deployment(source)
        response = self.request(
            "POST",
            "/deployments/",
            json={
                "name": name,
                "flow_id": d["flow_id"],
                "entrypoint": d["entrypoint"],
                "work_pool_name": pool or d["work_pool_name"],
                "pull_steps": d["pull_steps"],
                "parameter_openapi_schema": d["parameter_openapi_schema"],
                "enforce_parameter_schema": d["enforce_parameter_schema"],
                "job_variables": {**(job_variables or {}), "env": env},
            },
        )
        return str(response.json()["id"])

    def runs(
        self, deployment_id: str | None = None, ids: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Flow runs of a deployment, or with these ids."""
        query: dict[str, Any] = {}
        if deployment_id is not None:
            query["deployments"] = {"id": {"any_": [deployment_id]}}
        if ids is not None:
            query["flow_runs"] = {"id": {"any_": ids}}
        runs: list[dict[str, Any]] = self.request("POST", "/flow_runs/filter", json=query).json()
        return runs

    def wait_final(
        self,
        n: int,
        timeout_s: float,
        deployment_id: str | None = None,
        ids: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The runs (of a deployment, or with these ids) once `n` of them are in a final
        state: polled, no fixed sleep; TimeoutError when time runs out."""
        deadline = time.monotonic() + timeout_s
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = self.runs(deployment_id, ids)
            if sum(r["state_type"] in FINAL_STATES for r in runs) >= n:
                return runs
            time.sleep(0.25)
        states = sorted(str(r["state_type"]) for r in runs)
        raise TimeoutError(f"{n} flow runs not final within {timeout_s:g} s: {states}")
