"""DVC stage `train`: MLPClassifier grid search tracked in MLflow; the best model is registered.

Grid points (hidden layers x epochs from params.yaml) train in parallel on the available cores.
Each becomes a child run of one parent run in the experiment; the best by validation log loss
is evaluated on the test set, logged as a scikit-learn and an ONNX model, and registered as a
new version of the ONNX and the scikit-learn registered models (names in params.yaml,
`registry`). Both get the registry alias when test accuracy is above the threshold; otherwise
the command says so and exits 1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import mlflow
import mlflow.onnx
import mlflow.sklearn
import numpy as np
import onnx
import onnxruntime
import sklearn
import skops
import typer
from joblib import Parallel, delayed
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from skl2onnx import to_onnx as skl_to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, confusion_matrix, log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from tqdm import tqdm

from iris_core import FEATURES, N_FEATURES, drift
from iris_core.params import RegistryParams, TrainParams, load_params, promotes
from iris_training.cli import exits_cleanly
from iris_training.data import DataError
from iris_training.io import atomic_write_text

log = logging.getLogger(__name__)

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, help=__doc__)

DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"
ONNX_INPUT = "input"


class TrainingError(RuntimeError):
    """Training could not finish: MLflow unreachable, or the model is not good enough."""


@dataclass(frozen=True, slots=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    md5: dict[str, str]  # file name -> md5 of its bytes: DVC's hash of that file


@dataclass(frozen=True, slots=True)
class GridPoint:
    hidden_layers: int
    epochs: int


@dataclass(frozen=True, slots=True)
class FitResult:
    point: GridPoint
    model: MLPClassifier
    val_log_loss: float
    val_accuracy: float
    fit_time_s: float


@dataclass(frozen=True, slots=True)
class Outcome:
    best: FitResult
    test_accuracy: float
    versions: dict[str, str]  # registered model name -> version
    champion: bool


def _read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    if table.shape[1] != N_FEATURES + 1:
        raise DataError(f"{path}: expected {N_FEATURES + 1} columns, found {table.shape[1]}")
    return table[:, :N_FEATURES], table[:, N_FEATURES].astype(np.int64)


def load_dataset(data_dir: Path) -> Dataset:
    x_train, y_train = _read_split(data_dir / "train.csv")
    x_test, y_test = _read_split(data_dir / "test.csv")
    try:
        classes = json.loads((data_dir / "classes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{data_dir / 'classes.json'}: cannot read: {e}") from e
    md5 = {
        name: hashlib.md5((data_dir / name).read_bytes(), usedforsecurity=False).hexdigest()
        for name in ("train.csv", "test.csv", "classes.json")
    }
    return Dataset(x_train, y_train, x_test, y_test, classes, md5)


def make_model(hidden_layers: int, neurons: int, epochs: int, seed: int) -> MLPClassifier:
    return MLPClassifier(
        hidden_layer_sizes=(neurons,) * hidden_layers, max_iter=epochs, random_state=seed
    )


def fit_point(
    point: GridPoint,
    neurons: int,
    seed: int,
    fit: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
) -> FitResult:
    model = make_model(point.hidden_layers, neurons, point.epochs, seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # few epochs are part of the grid
        model.fit(*fit)
    fit_time = time.perf_counter() - start
    proba = model.predict_proba(val[0])
    return FitResult(
        point,
        model,
        val_log_loss=float(log_loss(val[1], proba, labels=model.classes_)),
        val_accuracy=float(accuracy_score(val[1], model.classes_[proba.argmax(axis=1)])),
        fit_time_s=fit_time,
    )


def grid(p: TrainParams) -> list[GridPoint]:
    return [GridPoint(h, e) for h in p.hidden_layers for e in p.epochs]


def search(p: TrainParams, data: Dataset, n_jobs: int) -> Iterator[FitResult]:
    """Fit every grid point in parallel, yielding results as they finish (order varies)."""
    x_fit, x_val, y_fit, y_val = train_test_split(
        data.x_train,
        data.y_train,
        test_size=p.validation_size,
        stratify=data.y_train,
        random_state=p.seed,
    )
    points = grid(p)
    jobs = (
        delayed(fit_point)(pt, p.neurons, p.seed, (x_fit, y_fit), (x_val, y_val)) for pt in points
    )
    runner = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    yield from tqdm(runner(jobs), total=len(points), desc="grid", unit="fit", disable=None)


def select_best(results: list[FitResult]) -> FitResult:
    """Lowest validation log loss; ties go to the smaller, shorter model (deterministic)."""
    return min(results, key=lambda r: (r.val_log_loss, r.point.hidden_layers, r.point.epochs))


def to_onnx(
    model: MLPClassifier, classes: list[str], x_reference: np.ndarray | None = None
) -> onnx.ModelProto:
    """ONNX graph with plain outputs (`label` int64 [N], `probabilities` float32 [N, C]) and the
    class names, feature names and (given rows `x_reference`, the training inputs) the input
    drift reference statistics in its metadata, so a server needs nothing else."""
    onx: onnx.ModelProto = skl_to_onnx(
        model,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, N_FEATURES]))],
        options={id(model): {"zipmap": False}},
    )
    props = {"class_names": json.dumps(classes), "features": json.dumps(list(FEATURES))}
    if x_reference is not None:
        # float32, as the model (and so the server) sees the inputs: a value on a bin edge
        # must fall on the same side here and there (5.1 in float32 is 5.0999999...).
        x32 = x_reference.astype(np.float32)
        columns = {name: x32[:, i].tolist() for i, name in enumerate(FEATURES)}
        props[drift.METADATA_KEY] = drift.dumps(drift.reference_from_columns(columns))
    onnx.helper.set_model_props(onx, props)
    return onx


def check_tracking_server(uri: str) -> None:
    """Fail fast, with the way out, when the tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):  # noqa: S310
            return
    except (urllib.error.URLError, OSError) as e:
        raise TrainingError(
            f"MLflow at {uri} does not answer ({e}): start it with `make up`, "
            "or point MLFLOW_TRACKING_URI at a running server"
        ) from e


def _confusion_figure(cm: np.ndarray, classes: list[str]) -> Figure:
    """A figure of its own (no pyplot state, no GUI backend): fine on a headless machine."""
    figure = Figure(figsize=(5, 4.5))
    ax = figure.subplots()
    display = ConfusionMatrixDisplay(cm, display_labels=[c.removeprefix("Iris-") for c in classes])
    display.plot(ax=ax, cmap="Blues", colorbar=False)
    ax.set_title("Confusion matrix (test set)")
    figure.tight_layout()
    return figure


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
            tags={MLFLOW_PARENT_RUN_ID: parent_id, **_data_tags(data)},
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


def _data_tags(data: Dataset) -> dict[str, str]:
    return {f"dvc.md5.{name}": md5 for name, md5 in data.md5.items()}


#: Where a run keeps the data its model was trained and tested on (train.csv, test.csv,
#: classes.json; a few KB): a fine-tune reads them from the champion's run, needing no data files.
DATA_ARTIFACTS = "data"
DATA_FILES = ("train.csv", "test.csv", "classes.json")


def log_models(
    model: MLPClassifier, data: Dataset, predicted: np.ndarray, test_accuracy: float
) -> tuple[ModelInfo, ModelInfo]:
    """In the active run: test metrics, confusion matrix, both models. Returns the scikit-learn
    and ONNX ModelInfo. Refuses an ONNX export that disagrees with scikit-learn."""
    cm = confusion_matrix(data.y_test, predicted, labels=np.arange(len(data.classes)))
    mlflow.log_metric("test_accuracy", test_accuracy)
    mlflow.log_figure(_confusion_figure(cm, data.classes), "confusion_matrix.png")
    mlflow.log_dict({"labels": data.classes, "matrix": cm.tolist()}, "confusion_matrix.json")

    x32 = data.x_test.astype(np.float32)
    onx = to_onnx(model, data.classes, data.x_train)
    session = onnxruntime.InferenceSession(
        onx.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    onnx_label, onnx_proba = session.run(None, {ONNX_INPUT: x32})
    if not np.array_equal(onnx_label, predicted):
        raise TrainingError(
            "the ONNX export predicts other labels than scikit-learn on the test set"
        )
    meta = {"class_names": data.classes, "features": list(FEATURES)}
    sk_info = mlflow.sklearn.log_model(
        model,
        name="sklearn_model",
        signature=infer_signature(data.x_test, predicted),
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"],
        skops_trusted_types=["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"],
        metadata=meta,
    )
    onnx_info = mlflow.onnx.log_model(
        onx,
        name="onnx_model",
        signature=infer_signature(x32, {"label": onnx_label, "probabilities": onnx_proba}),
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        save_as_external_data=False,
        metadata=meta,
    )
    return sk_info, onnx_info


def log_data(data_dir: Path) -> None:
    """The model's data files, into the active run under `data/`."""
    for name in DATA_FILES:
        mlflow.log_artifact(str(data_dir / name), DATA_ARTIFACTS)


def register_versions(
    client: MlflowClient, model_uris: dict[str, str], tags: dict[str, str], alias: str | None
) -> dict[str, str]:
    """A new version of each registered model (name -> logged model URI), tagged; `alias`
    moves to them when given. Returns name -> version."""
    versions = {
        name: str(mlflow.register_model(uri, name, tags=tags).version)
        for name, uri in model_uris.items()
    }
    if alias:
        for name, version in versions.items():
            client.set_registered_model_alias(name, alias, version)
    return versions


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

    with mlflow.start_run(run_name="grid-search", tags=_data_tags(data)) as parent:
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
