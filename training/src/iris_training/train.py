"""DVC stage `train`: MLPClassifier grid search tracked in MLflow; the best model is registered.

Grid points (hidden layers x epochs from params.yaml) train in parallel on the available cores.
Each becomes a child run of one parent run in the experiment; the best by validation log loss
is evaluated on the test set, logged as a scikit-learn and an ONNX model, and registered as a
new version of the ONNX and the scikit-learn registered models (names in params.yaml,
`registry`). Both get the registry alias when test accuracy is above the threshold; otherwise
the command says so and exits 1.

This module is the command and its orchestration only. The work is in library modules, which
the fine-tuning flow uses too: `dataset` (the prepared files), `search` (the grid), `export`
(ONNX, confusion figure) and `tracking` (MLflow: logging, registering, the server check).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import mlflow
import numpy as np
import typer
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from sklearn.metrics import accuracy_score

from iris_core.params import RegistryParams, TrainParams, load_params, promotes
from iris_training.cli import exits_cleanly
from iris_training.dataset import Dataset, load_dataset
from iris_training.io import atomic_write_text
from iris_training.search import FitResult, GridPoint, search, select_best
from iris_training.tracking import (
    TrainingError,
    check_tracking_server,
    data_tags,
    log_data,
    log_models,
    register_versions,
)

log = logging.getLogger(__name__)

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, help=__doc__)

DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"


@dataclass(frozen=True, slots=True)
class Outcome:
    best: FitResult
    test_accuracy: float
    versions: dict[str, str]  # registered model name -> version
    champion: bool


def _log_search(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    p: TrainParams,
    data: Dataset,
    n_jobs: int,
) -> tuple[list[FitResult], dict[GridPoint, str]]:
    """Run the grid; each point becomes a child run of `parent_id` as soon as it finishes."""
    results: list[FitResult] = []
    run_ids: dict[GridPoint, str] = {}
    for r in search(p, data, n_jobs):
        child = client.create_run(
            experiment_id,
            run_name=f"layers={r.point.hidden_layers}-epochs={r.point.epochs}",
            tags={MLFLOW_PARENT_RUN_ID: parent_id, **data_tags(data)},
        )
        now = int(time.time() * 1000)
        client.log_batch(
            child.info.run_id,
            params=[
                Param("hidden_layers", str(r.point.hidden_layers)),
                Param("neurons", str(p.neurons)),
                Param("epochs", str(r.point.epochs)),
                Param("seed", str(p.seed)),
            ],
            metrics=[
                Metric("val_log_loss", r.val_log_loss, now, 0),
                Metric("val_accuracy", r.val_accuracy, now, 0),
                Metric("fit_time_s", r.fit_time_s, now, 0),
                Metric("n_iter", float(r.model.n_iter_), now, 0),
            ],
        )
        client.set_terminated(child.info.run_id)
        results.append(r)
        run_ids[r.point] = child.info.run_id
    return results, run_ids


def _register(
    client: MlflowClient,
    reg: RegistryParams,
    model_uris: dict[str, str],
    best: FitResult,
    test_accuracy: float,
) -> tuple[dict[str, str], bool]:
    """New versions of both registered models, tagged; the alias only above the threshold."""
    tags = {
        "test_accuracy": f"{test_accuracy:.4f}",
        "epochs": str(best.point.epochs),
        "hidden_layers": str(best.point.hidden_layers),
    }
    champion = promotes(test_accuracy, reg.accuracy_above)
    versions = register_versions(client, model_uris, tags, reg.alias if champion else None)
    return versions, champion


def train(
    p: TrainParams,
    reg: RegistryParams,
    data_dir: Path,
    metrics_path: Path,
    plots_path: Path,
    tracking_uri: str,
    n_jobs: int = -1,
) -> Outcome:
    """Search, track, register; write the metrics and plots files for DVC."""
    data = load_dataset(data_dir)
    check_tracking_server(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = mlflow.set_experiment(reg.experiment)

    with mlflow.start_run(run_name="grid-search", tags=data_tags(data)) as parent:
        mlflow.log_params(
            {
                "hidden_layers_grid": p.hidden_layers,
                "epochs_grid": p.epochs,
                "neurons": p.neurons,
                "validation_size": p.validation_size,
                "seed": p.seed,
                "n_train": len(data.y_train),
                "n_test": len(data.y_test),
            }
        )
        results, run_ids = _log_search(
            client, experiment.experiment_id, parent.info.run_id, p, data, n_jobs
        )
        best = select_best(results)
        predicted = best.model.predict(data.x_test)
        test_accuracy = float(accuracy_score(data.y_test, predicted))
        log.info(
            "best: %d hidden layers x %d epochs, val log loss %.4f, test accuracy %.4f",
            best.point.hidden_layers,
            best.point.epochs,
            best.val_log_loss,
            test_accuracy,
        )
        with mlflow.start_run(run_id=run_ids[best.point], nested=True):
            mlflow.set_tag("best", "true")
            log_data(data_dir)
            sk_info, onnx_info = log_models(best.model, data, predicted, test_accuracy)
        mlflow.log_metrics(
            {
                "best_val_log_loss": best.val_log_loss,
                "best_val_accuracy": best.val_accuracy,
                "test_accuracy": test_accuracy,
            }
        )
        mlflow.set_tag("best_run_id", run_ids[best.point])
        log.info(
            "grid search run: %s/#/experiments/%s/runs/%s",
            tracking_uri.rstrip("/"),
            experiment.experiment_id,
            parent.info.run_id,
        )

    uris = {reg.onnx_model_name: onnx_info.model_uri, reg.sklearn_model_name: sk_info.model_uri}
    versions, champion = _register(client, reg, uris, best, test_accuracy)
    _write_outputs(metrics_path, plots_path, best, test_accuracy, data, predicted)
    return Outcome(best, test_accuracy, versions, champion)


def _write_outputs(
    metrics_path: Path,
    plots_path: Path,
    best: FitResult,
    test_accuracy: float,
    data: Dataset,
    predicted: np.ndarray,
) -> None:
    metrics = {
        "test_accuracy": round(test_accuracy, 6),
        "val_log_loss": round(best.val_log_loss, 6),
        "val_accuracy": round(best.val_accuracy, 6),
        "hidden_layers": best.point.hidden_layers,
        "epochs": best.point.epochs,
    }
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    rows = "".join(
        f"{data.classes[int(a)]},{data.classes[int(b)]}\n"
        for a, b in zip(data.y_test, predicted, strict=True)
    )
    atomic_write_text(plots_path, "actual,predicted\n" + rows)


@app.command()
@exits_cleanly
def main(
    params: Annotated[
        Path, typer.Option(help="Parameters file (reads the `train` and `registry` keys).")
    ] = Path("params.yaml"),
    data_dir: Annotated[Path, typer.Option(help="Folder with train/test/classes.")] = Path("data"),
    metrics: Annotated[Path, typer.Option(help="Metrics file for `dvc metrics`.")] = Path(
        "metrics.json"
    ),
    plots: Annotated[Path, typer.Option(help="Confusion rows for `dvc plots`.")] = Path(
        "plots/confusion.csv"
    ),
    tracking_uri: Annotated[
        str, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server.")
    ] = DEFAULT_TRACKING_URI,
    n_jobs: Annotated[
        int, typer.Option(envvar="IRIS_TRAIN_N_JOBS", help="Parallel fits; -1 = all cores.")
    ] = -1,
) -> None:
    """Grid-search an MLPClassifier, track it in MLflow and register the best model."""
    # One line per run is noise here: the parent run's URL is logged below instead.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    loaded = load_params(params)
    reg = loaded.registry
    try:
        outcome = train(loaded.train, reg, data_dir, metrics, plots, tracking_uri, n_jobs)
    except TrainingError as e:
        log.error("%s", e)
        raise SystemExit(1) from e
    registered = ", ".join(f"{n} v{v}" for n, v in outcome.versions.items())
    if not outcome.champion:
        log.error(
            "test accuracy %.4f is not above the threshold %.4f (params.yaml "
            "registry.accuracy_above): registered %s without the alias '%s'",
            outcome.test_accuracy,
            reg.accuracy_above,
            registered,
            reg.alias,
        )
        raise SystemExit(1)
    typer.echo(
        f"registered {registered} with alias '{reg.alias}' "
        f"(test accuracy {outcome.test_accuracy:.4f})"
    )
