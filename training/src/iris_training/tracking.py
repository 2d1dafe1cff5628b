"""The MLflow side of making a model, shared by `iris-train` and the fine-tuning flow: the
tracking-server check, logging a model (scikit-learn and ONNX, with its test metrics and
confusion matrix) and its data into the active run, and registering new versions.

Keeping these in one place means a trained and a fine-tuned version look the same in MLflow
(the same artifacts, metadata and checks), so the API serves either alike.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import mlflow.onnx
import mlflow.sklearn
import numpy as np
import onnx
import onnxruntime
import sklearn
import skops
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from sklearn.metrics import confusion_matrix
from sklearn.neural_network import MLPClassifier

from iris_core import FEATURES
from iris_training.dataset import DATA_FILES, Dataset
from iris_training.export import confusion_figure, run_onnx, to_onnx

#: Where a run keeps the data its model was trained and tested on (train.csv, test.csv,
#: classes.json; a few KB): a fine-tune reads them from the champion's run, needing no data files.
DATA_ARTIFACTS = "data"


class TrainingError(RuntimeError):
    """A model could not be tracked: MLflow unreachable, or the ONNX export disagrees with the
    scikit-learn model."""


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


def data_tags(data: Dataset) -> dict[str, str]:
    """Run tags naming the data by DVC's hashes (`dvc.md5.<file>`), so a run can be traced to
    the commit of dvc.lock that produced its data."""
    return {f"dvc.md5.{name}": md5 for name, md5 in data.md5.items()}


def log_models(
    model: MLPClassifier, data: Dataset, predicted: np.ndarray, test_accuracy: float
) -> tuple[ModelInfo, ModelInfo]:
    """In the active run: test metrics, confusion matrix, both models. Returns the scikit-learn
    and ONNX ModelInfo. Refuses an ONNX export that disagrees with scikit-learn."""
    cm = confusion_matrix(data.y_test, predicted, labels=np.arange(len(data.classes)))
    mlflow.log_metric("test_accuracy", test_accuracy)
    mlflow.log_figure(confusion_figure(cm, data.classes), "confusion_matrix.png")
    mlflow.log_dict({"labels": data.classes, "matrix": cm.tolist()}, "confusion_matrix.json")

    x32 = data.x_test.astype(np.float32)
    onx = to_onnx(model, data.classes, data.x_train)
    onnx_label, onnx_proba = run_onnx(onx, x32)
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
