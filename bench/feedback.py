"""Feedback benchmark, one machine, the embedded stack's settings. Two parts:

1. Accepting and applying, on each backend in the same run: the feedback store and Prefect's
   database on SQLite files (the default), then both on a local PostgreSQL (durable settings:
   fsync on). 16 clients send `--rows` suggestions at once; printed: suggestions accepted per
   second (202 = stored), and from the store's own clock the time from accepted to applied by a
   flow run, p50 and p99, and how many runs were asked for. Fine-tunes are off here (every
   10^6 rows), so this is the path every row takes.
2. The fine-tune timeline (SQLite): each round sends 4 suggestions, waits until they are
   applied, then sends the 5th and polls /predict every 20 ms until the model version changes.
   The parts come from the servers' own clocks (same machine): the Prefect flow run that held
   the fine-tune (created, started, ended), its fine-tune task, the MLflow fine-tune run and its
   duration metrics, the registered versions' creation times.

Real MLflow, Prefect server, process worker (polling every second, as `make up` starts it) and
API on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from iris_core.params import RegistryParams
    from iris_testing.prefect_rest import PrefectRest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "iris-bench"
TOKEN = secrets.token_urlsafe(24)


def _ts(value: str | None) -> float:
    """An ISO timestamp from Prefect as epoch seconds."""
    if not value:
        return float("nan")
    return datetime.fromisoformat(value).timestamp()


def _suggestion(i: int) -> dict[str, Any]:
    from iris_core import CLASS_NAMES, EXAMPLES, FEATURES  # noqa: PLC0415

    name = CLASS_NAMES[i % 3]
    nudged = [round(v + (i // 3 % 20) / 100, 2) for v in EXAMPLES[name]]
    return dict(zip(FEATURES, nudged, strict=True)) | {"class_name": name}


@dataclass
class Stack:
    client: httpx.Client
    rest: PrefectRest
    store_url: str


@contextlib.contextmanager
def stack(
    tmp: Path,
    tracking: str,
    reg: RegistryParams,
    poll: float,
    backend: str,
    every: int,
) -> Iterator[Stack]:
    """Prefect (its database on `backend`), a worker and the API with a feedback store on
    `backend`, against MLflow at `tracking`."""
    from iris_core.feedback import STORE_URL  # noqa: PLC0415
    from iris_stack.deploy import deploy_local, wait_pool_ready  # noqa: PLC0415
    from iris_stack.postgres import Postgres  # noqa: PLC0415
    from iris_stack.process import running  # noqa: PLC0415
    from iris_stack.services import (  # noqa: PLC0415
        api_server,
        prefect_server,
        prefect_worker,
        ready_url,
    )
    from iris_testing.ports import free_port  # noqa: PLC0415
    from iris_testing.prefect_rest import PrefectRest  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        prefect_db, store_url, extra = None, f"sqlite:///{tmp / 'feedback.db'}", {}
        if backend == "postgresql":
            # /tmp: the server's system user cannot enter every temporary folder.
            folder = Path(tempfile.mkdtemp(prefix="iris-bench-pg-"))
            cluster = Postgres(folder, free_port())
            cluster.init()
            stack.enter_context(running(cluster.service(), timeout_s=60))
            password = secrets.token_urlsafe(16)
            for name in ("prefect", "feedback"):
                cluster.create_role(name, password)
                cluster.create_database(name, name)
            prefect_db = cluster.url("prefect", "prefect", password, "postgresql+asyncpg")
            store_url = cluster.url("feedback", "feedback", password)
            extra = {"IRIS_API_PREFECT_CONCURRENCY": "4"}
        prefect = prefect_server(tmp / "prefect", free_port(), database_url=prefect_db)
        stack.enter_context(running(prefect, timeout_s=120))
        prefect_url = prefect.health_url.removesuffix("/health")
        deploy_local(prefect_url, tmp / "client", POOL, ROOT)
        names = {
            "IRIS_FINETUNE_SKLEARN_MODEL_NAME": reg.sklearn_model_name,
            "IRIS_FINETUNE_ONNX_MODEL_NAME": reg.onnx_model_name,
            "IRIS_FINETUNE_EXPERIMENT": reg.experiment,
            "IRIS_FINETUNE_EVERY": str(every),
        }
        worker = prefect_worker(
            POOL, prefect_url, tmp / "client", tracking, free_port(), tmp / "worker.log",
            env={STORE_URL: store_url, **names}, cwd=tmp,
        )  # fmt: skip
        stack.enter_context(running(worker))
        wait_pool_ready(prefect_url, POOL, 60)
        api = api_server(
            free_port(),
            tracking,
            tmp / "api.log",
            env={
                "IRIS_API_MODEL_NAME": reg.onnx_model_name,
                "IRIS_API_PREFECT_API_URL": prefect_url,
                "IRIS_API_POLL_INTERVAL_S": str(poll),
                "IRIS_API_FEEDBACK_TOKEN": TOKEN,
                "IRIS_API_FEEDBACK_RATE_LIMIT": "100000/second",
                "IRIS_API_FEEDBACK_EVERY": str(every),
                STORE_URL: store_url,
                **extra,
            },
        )
        stack.enter_context(running(api))
        api.wait_healthy(60, url=ready_url(api))
        base = api.health_url.removesuffix("/v2/health/live")
        client = stack.enter_context(
            httpx.Client(
                base_url=base,
                timeout=60,
                headers={"Authorization": f"Bearer {TOKEN}"},
                limits=httpx.Limits(max_connections=32),
            )
        )
        rest = PrefectRest(prefect_url)
        stack.callback(rest.close)
        yield Stack(client, rest, store_url)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench feedback", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="fine-tunes to time")
    parser.add_argument("--poll", type=float, default=10.0, help="IRIS_API_POLL_INTERVAL_S")
    parser.add_argument("--rows", type=int, default=400, help="suggestions per backend")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument(
        "--parts", nargs="+", default=["accept", "timeline"], choices=["accept", "timeline"]
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from iris_stack.process import running  # noqa: PLC0415
    from iris_stack.services import mlflow_server  # noqa: PLC0415
    from iris_testing.data import uci_lines  # noqa: PLC0415
    from iris_testing.ports import free_port  # noqa: PLC0415
    from iris_testing.training import own_registry, small_params  # noqa: PLC0415
    from iris_training.prepare import prepare  # noqa: PLC0415
    from iris_training.train import train  # noqa: PLC0415

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "data").mkdir()
        (tmp / "data" / "data.csv").write_text("\n".join(uci_lines()) + "\n")
        prepare(tmp / "data" / "data.csv", tmp / "data", [], test_size=0.2, seed=42)
        with running(mlflow_server(tmp / "mlflow", free_port())) as mlflow:
            tracking = mlflow.health_url.removesuffix("/health")
            reg = own_registry()
            out = tmp / "train"
            train(small_params(), reg, tmp / "data", out / "m.json", out / "c.csv", tracking, 2)
            if "accept" in args.parts:
                accepted = {}
                for backend in ("sqlite", "postgresql"):
                    with stack(tmp / backend, tracking, reg, args.poll, backend, 10**6) as s:
                        accepted[backend] = _accept(s, args.rows, args.clients)
                _report_accept(accepted, args.rows, args.clients)
            if "timeline" in args.parts:
                with stack(tmp / "timeline", tracking, reg, args.poll, "sqlite", 5) as s:
                    registry = MlflowClient(tracking)
                    print(
                        f"\nAPI poll interval {args.poll:g} s, worker poll 1 s, {args.rounds} rounds"
                    )
                    rows = [_round(r, s, registry, reg) for r in range(args.rounds)]
                    _report(rows, args.poll)


def _accept(s: Stack, n: int, clients: int) -> dict[str, float]:
    """`n` suggestions from `clients` threads; then, once all are applied, the numbers."""
    from sqlalchemy import select  # noqa: PLC0415

    from iris_core.feedback import FeedbackStore  # noqa: PLC0415
    from iris_core.feedback.schema import feedback  # noqa: PLC0415

    def send(i: int) -> int:
        response = s.client.post("/suggest", json=_suggestion(i))
        return response.status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        codes = list(pool.map(send, range(n)))
    took = time.perf_counter() - start
    with FeedbackStore.open(s.store_url) as store:
        deadline = time.monotonic() + 600
        while store.backlog(every=10**6).applied < codes.count(202):
            if time.monotonic() > deadline:
                raise RuntimeError("rows were not applied within 600 s")
            time.sleep(0.1)
        with store.database.read() as conn:
            rows = conn.execute(
                select(feedback.c.received_at, feedback.c.applied_at, feedback.c.applied_by)
            ).all()
    latencies = sorted((r.applied_at - r.received_at).total_seconds() for r in rows)
    stats = s.client.get("/feedback/stats").json()
    return {
        "accepted": codes.count(202),
        "per_s": codes.count(202) / took,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "runs": stats["runs"]["new"] + stats["runs"]["catchup"],
        "appliers": len({r.applied_by for r in rows}),
    }


def _report_accept(results: dict[str, dict[str, float]], n: int, clients: int) -> None:
    print(f"\naccepting and applying {n} suggestions from {clients} clients (no fine-tunes):")
    print(
        f"  {'backend':<12}{'accepted':>10}{'accepted/s':>12}{'applied p50':>13}"
        f"{'p99':>8}{'runs asked':>12}{'runs applying':>15}"
    )
    for backend, r in results.items():
        print(
            f"  {backend:<12}{r['accepted']:>10.0f}{r['per_s']:>12.1f}{r['p50']:>12.2f}s"
            f"{r['p99']:>7.2f}s{r['runs']:>12.0f}{r['appliers']:>15.0f}"
        )
    print("  (accepted = 202 = stored; applied: from the store's received_at to applied_at)")


def _round(r: int, s: Stack, registry: Any, reg: RegistryParams) -> dict[str, float]:
    """4 suggestions, applied; the 5th, then /predict until the version changes."""
    from iris_core.feedback import FeedbackStore  # noqa: PLC0415

    client = s.client
    for i in range(4):
        client.post("/suggest", json=_suggestion(5 * r + i)).raise_for_status()
    with FeedbackStore.open(s.store_url) as store:
        while store.backlog(every=5).applied < 5 * r + 4:
            time.sleep(0.05)
        before = _served(client)
        client.post("/suggest", json=_suggestion(5 * r + 4)).raise_for_status()
        t0 = time.time()
        while (version := _served(client)) == before:
            if time.time() - t0 > 120:
                raise RuntimeError("the new version was not served within 120 s")
            time.sleep(0.02)
        served = time.time()
        tune = next(t for t in store.finetunes() if t.rows == 5 * (r + 1))
    [flow_run] = s.rest.wait_final(1, 300, ids=[tune.claimed_by])
    tasks = s.rest.request(
        "POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [tune.claimed_by]}}}
    ).json()
    tune_task = next(t for t in tasks if t["name"].startswith("fine_tune_at"))
    experiment = registry.get_experiment_by_name(reg.experiment)
    [run] = registry.search_runs(
        [experiment.experiment_id], f"tags.feedback_rows = '{5 * (r + 1)}'"
    )
    registered = registry.get_model_version(reg.onnx_model_name, version).creation_timestamp
    m = run.data.metrics
    row = {
        "scheduled": _ts(flow_run["created"]) - t0,
        "started": _ts(flow_run["start_time"]) - t0,
        "fine-tune task": _ts(tune_task["start_time"]) - t0,
        "load parent": m["duration_load_s"],
        "fit": m["duration_fit_s"],
        "track (MLflow run)": m["duration_track_s"],
        "register": m["duration_register_s"],
        "registered": registered / 1000 - t0,
        "flow run ended": _ts(flow_run["end_time"]) - t0,
        "served (first /predict)": served - t0,
    }
    parts = ", ".join(f"{k} {v:+.2f}" if k in TIMELINE else f"{k} {v:.2f}" for k, v in row.items())
    print(f"round {r + 1}: version {before} -> {version}: {parts}")
    return row


def _served(client: httpx.Client) -> str:
    flower = {k: v for k, v in _suggestion(0).items() if k != "class_name"}
    version: str = client.post("/predict", json=flower).json()["model_version"]
    return version


def _report(rows: list[dict[str, float]], poll: float) -> None:
    print()
    print("median of the rounds, seconds after the 5th /suggest answered:")
    for key in rows[0]:
        values = [row[key] for row in rows]
        kind = "at" if key in TIMELINE else "took"
        print(
            f"  {key:<24} {kind:>4} {statistics.median(values):6.2f}   "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )
    total = statistics.median([row["served (first /predict)"] for row in rows])
    swap = statistics.median([row["served (first /predict)"] - row["registered"] for row in rows])
    start = statistics.median([row["started"] - row["scheduled"] for row in rows])
    print(f"5th /suggest -> first /predict from the new version: {total:.2f} s (goal < 30 s)")
    print(f"  registered -> served (the API's registry poll, {poll:g} s): {swap:.2f} s")
    print(f"  scheduled -> running (worker poll, flow run process start): {start:.2f} s")


TIMELINE = {
    "scheduled",
    "started",
    "fine-tune task",
    "registered",
    "flow run ended",
    "served (first /predict)",
}
