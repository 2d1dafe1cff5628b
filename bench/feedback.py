"""Feedback benchmark: from the 5th /suggest answer to the first /predict answer from the
fine-tuned version, and where the time goes. One machine, the embedded stack's settings.

A real MLflow server, Prefect server, process worker (polling every second, as `make up` starts
it) and API (polling the registry every IRIS_API_POLL_INTERVAL_S, 10 s by default) on
127.0.0.1. Each round sends 4 suggestions, waits for their runs, then sends the 5th and polls
/predict every 20 ms until the model version changes. The parts come from the servers' own
clocks (same machine): the Prefect flow run (created, started, ended), its fine-tune task, the
MLflow fine-tune run and its duration metrics, the registered versions' creation times.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from iris_testing.prefect_rest import PrefectRest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "iris-bench"


def _ts(value: str | None) -> float:
    """An ISO timestamp from Prefect as epoch seconds."""
    if not value:
        return float("nan")
    return datetime.fromisoformat(value).timestamp()


def _suggestion(i: int) -> dict[str, Any]:
    from iris_core import CLASS_NAMES, EXAMPLES, FEATURES  # noqa: PLC0415

    name = CLASS_NAMES[i % 3]
    return dict(zip(FEATURES, EXAMPLES[name], strict=True)) | {"class_name": name}


def _wait_completed(prefect: PrefectRest, ids: list[str], timeout_s: float = 300) -> None:
    states = {r["state_type"] for r in prefect.wait_final(len(ids), timeout_s, ids=ids)}
    if states != {"COMPLETED"}:
        raise RuntimeError(f"flow runs did not complete: {states}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench feedback", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="fine-tunes to time")
    parser.add_argument("--poll", type=float, default=10.0, help="IRIS_API_POLL_INTERVAL_S")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from iris_core.feedback import STORE_URL  # noqa: PLC0415
    from iris_stack.deploy import deploy_local, wait_pool_ready  # noqa: PLC0415
    from iris_stack.process import running  # noqa: PLC0415
    from iris_stack.services import (  # noqa: PLC0415
        api_server,
        mlflow_server,
        prefect_server,
        prefect_worker,
        ready_url,
    )
    from iris_testing.data import uci_lines  # noqa: PLC0415
    from iris_testing.ports import free_port  # noqa: PLC0415
    from iris_testing.prefect_rest import PrefectRest  # noqa: PLC0415
    from iris_testing.training import own_registry, small_params  # noqa: PLC0415
    from iris_training.prepare import prepare  # noqa: PLC0415
    from iris_training.train import train  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as name, contextlib.ExitStack() as stack:
        tmp = Path(name)
        (tmp / "data").mkdir()
        (tmp / "data" / "data.csv").write_text("\n".join(uci_lines()) + "\n")
        prepare(tmp / "data" / "data.csv", tmp / "data", [], test_size=0.2, seed=42)
        mlflow = mlflow_server(tmp / "mlflow", free_port())
        prefect = prefect_server(tmp / "prefect", free_port())
        mlflow.start()
        prefect.start()
        stack.callback(mlflow.stop)
        stack.callback(prefect.stop)
        mlflow.wait_healthy(120)
        prefect.wait_healthy(120)
        tracking = mlflow.health_url.removesuffix("/health")
        prefect_url = prefect.health_url.removesuffix("/health")

        params = own_registry()
        out = tmp / "train"
        train(small_params(), params, tmp / "data", out / "m.json", out / "c.csv", tracking, 2)
        deploy_local(prefect_url, tmp / "client", POOL, ROOT)
        store_url = f"sqlite:///{tmp / 'feedback.db'}"
        worker = prefect_worker(
            POOL,
            prefect_url,
            tmp / "client",
            tracking,
            free_port(),
            tmp / "worker.log",
            env={
                STORE_URL: store_url,
                "IRIS_FINETUNE_SKLEARN_MODEL_NAME": params.sklearn_model_name,
                "IRIS_FINETUNE_ONNX_MODEL_NAME": params.onnx_model_name,
                "IRIS_FINETUNE_EXPERIMENT": params.experiment,
            },
            cwd=tmp,
        )
        stack.enter_context(running(worker))
        wait_pool_ready(prefect_url, POOL, 60)
        api = api_server(
            free_port(),
            tracking,
            tmp / "api.log",
            env={
                "IRIS_API_MODEL_NAME": params.onnx_model_name,
                "IRIS_API_PREFECT_API_URL": prefect_url,
                STORE_URL: store_url,
                "IRIS_API_POLL_INTERVAL_S": str(args.poll),
            },
        )
        stack.enter_context(running(api))
        api.wait_healthy(60, url=ready_url(api))
        base = api.health_url.removesuffix("/v2/health/live")
        client = stack.enter_context(httpx.Client(base_url=base, timeout=60))
        rest = PrefectRest(prefect_url)
        stack.callback(rest.close)
        registry = MlflowClient(tracking)
        print(f"API poll interval {args.poll:g} s, worker poll 1 s, {args.rounds} rounds")
        rows = [
            _round(r, client, rest, registry, params.experiment, params.onnx_model_name)
            for r in range(args.rounds)
        ]
        _report(rows, args.poll)


def _round(
    r: int,
    client: httpx.Client,
    rest: PrefectRest,
    registry: Any,
    experiment_name: str,
    model_name: str,
) -> dict[str, float]:
    """4 suggestions, their runs done; the 5th, then /predict until the version changes."""
    ids = [client.post("/suggest", json=_suggestion(i)).json()["flow_run_id"] for i in range(4)]
    _wait_completed(rest, ids)
    before = _served(client)
    answer = client.post("/suggest", json=_suggestion(4))
    t0 = time.time()
    run_id = answer.json()["flow_run_id"]
    while (version := _served(client)) == before:
        if time.time() - t0 > 120:
            raise RuntimeError("the new version was not served within 120 s")
        time.sleep(0.02)
    served = time.time()
    _wait_completed(rest, [run_id])
    flow_run = rest.request("GET", f"/flow_runs/{run_id}").json()
    tasks = rest.request(
        "POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}
    ).json()
    tune_task = next(t for t in tasks if t["name"].startswith("fine_tune_at"))
    experiment = registry.get_experiment_by_name(experiment_name)
    [tune] = registry.search_runs(
        [experiment.experiment_id], f"tags.feedback_rows = '{5 * (r + 1)}'"
    )
    registered = registry.get_model_version(model_name, version).creation_timestamp / 1000
    m = tune.data.metrics
    row = {
        "scheduled": _ts(flow_run["created"]) - t0,
        "started": _ts(flow_run["start_time"]) - t0,
        "fine-tune task": _ts(tune_task["start_time"]) - t0,
        "load parent": m["duration_load_s"],
        "fit": m["duration_fit_s"],
        "track (MLflow run)": m["duration_track_s"],
        "register": m["duration_register_s"],
        "registered": registered - t0,
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
    def median(values: list[float]) -> float:
        return statistics.median(values)

    print()
    print("median of the rounds, seconds after the 5th /suggest answered:")
    for key in rows[0]:
        values = [row[key] for row in rows]
        kind = "at" if key in TIMELINE else "took"
        print(
            f"  {key:<24} {kind:>4} {median(values):6.2f}   "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )
    total = median([row["served (first /predict)"] for row in rows])
    swap = median([row["served (first /predict)"] - row["registered"] for row in rows])
    start = median([row["started"] - row["scheduled"] for row in rows])
    setup = median(
        [
            row["registered"]
            - row["fine-tune task"]
            - sum(row[k] for k in ("load parent", "fit", "track (MLflow run)", "register"))
            for row in rows
        ]
    )
    print(f"5th /suggest -> first /predict from the new version: {total:.2f} s (goal < 30 s)")
    print(f"  registered -> served (the API's registry poll, {poll:g} s): {swap:.2f} s")
    print(f"  scheduled -> running (worker poll, flow run process start): {start:.2f} s")
    print(f"  in the fine-tune task besides its parts (imports, evaluation): {setup:.2f} s")


TIMELINE = {
    "scheduled",
    "started",
    "fine-tune task",
    "registered",
    "flow run ended",
    "served (first /predict)",
}
