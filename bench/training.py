"""Training benchmarks, one run, on this machine:

1. `dvc repro` from nothing (fetch, prepare, the full grid, registration) with MLflow running,
   then a second `dvc repro` that has nothing to do;
2. the grid search alone (params.yaml grid), on all cores (cold and warm workers) and on one;
3. MLflow logging per run: one child run (create, params and metrics, end), and the best run's
   two model logs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench training", description=__doc__)
    parser.add_argument("--log-runs", type=int, default=30, help="child runs to time")
    args = parser.parse_args(argv)

    import mlflow  # noqa: PLC0415
    from mlflow.entities import Metric, Param  # noqa: PLC0415

    from iris_core.params import load_params  # noqa: PLC0415
    from iris_stack.process import running  # noqa: PLC0415
    from iris_stack.services import mlflow_server  # noqa: PLC0415
    from iris_testing.ports import free_port  # noqa: PLC0415
    from iris_testing.project import copy_pipeline  # noqa: PLC0415
    from iris_training.dataset import load_dataset  # noqa: PLC0415
    from iris_training.search import search, select_best  # noqa: PLC0415
    from iris_training.tracking import log_models  # noqa: PLC0415

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        running(mlflow_server(Path(tmp) / "mlflow", free_port())) as server,
    ):
        url = server.health_url.removesuffix("/health")
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": url,
            "DVC_NO_ANALYTICS": "1",
        }
        project = copy_pipeline(ROOT, Path(tmp) / "iris-mlops")
        cold = timed([str(BIN / "dvc"), "repro"], project, env)
        warm = timed([str(BIN / "dvc"), "repro"], project, env)
        print(f"dvc repro from nothing (MLflow running):  {cold:7.2f} s   (goal: < 60 s)")
        print(f"dvc repro, nothing to do:                 {warm:7.2f} s")

        p = load_params(ROOT / "params.yaml").train
        data = load_dataset(project / "data")
        n = len(p.hidden_layers) * len(p.epochs)
        # The first parallel call pays for starting the worker processes (as `dvc repro` does).
        for jobs, label in ((-1, "all cores, cold"), (-1, "all cores, warm"), (1, "1 core")):
            start = time.perf_counter()
            results = list(search(p, data, n_jobs=jobs))
            took = time.perf_counter() - start
            print(f"grid search alone, {n} points, {label:15}: {took:6.2f} s")

        mlflow.set_tracking_uri(url)
        client = mlflow.MlflowClient(url)
        experiment_id = client.create_experiment(f"bench-{time.time_ns()}")
        per_run = []
        for i in range(args.log_runs):
            start = time.perf_counter()
            run = client.create_run(experiment_id, run_name=f"run-{i}")
            now = int(time.time() * 1000)
            client.log_batch(
                run.info.run_id,
                params=[Param("hidden_layers", "2"), Param("epochs", "100")],
                metrics=[Metric("val_log_loss", 0.1, now, 0), Metric("val_accuracy", 0.9, now, 0)],
            )
            client.set_terminated(run.info.run_id)
            per_run.append(time.perf_counter() - start)
        print(
            f"MLflow child run (create+log+end), n={args.log_runs}: "
            f"median {statistics.median(per_run) * 1000:6.1f} ms, "
            f"max {max(per_run) * 1000:6.1f} ms"
        )
        best = select_best(results)
        with mlflow.start_run(experiment_id=experiment_id, run_name="best"):
            start = time.perf_counter()
            predicted = best.model.predict(data.x_test)
            log_models(best.model, data, predicted, float((predicted == data.y_test).mean()))
            took = time.perf_counter() - start
        print(f"MLflow best run (figure + sklearn + ONNX models): {took:6.2f} s")
