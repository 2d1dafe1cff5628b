"""A served model without a registry: an MLP trained in this process on the prepared data and
exported as training exports it (`iris_training.export.to_onnx`: class names, features and the
drift reference in its metadata), in a model folder the API's folder source serves
(`<folder>/<version>/model.onnx`, `tags.json`). The API tests that need no MLflow run on it."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score

from iris_api.sources import MODEL_FILE, TAGS_FILE
from iris_training.dataset import load_dataset
from iris_training.export import to_onnx
from iris_training.search import make_model


@dataclass(frozen=True)
class OnnxModel:
    """One exported model: its file and its test accuracy."""

    onnx: bytes
    test_accuracy: float


def train_onnx(data_dir: Path, seed: int = 42, epochs: int = 600) -> OnnxModel:
    """A one-layer MLP on `data_dir`'s train.csv, exported to ONNX (a second or so)."""
    data = load_dataset(data_dir)
    model = make_model(hidden_layers=1, neurons=8, epochs=epochs, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(data.x_train, data.y_train)
    accuracy = float(accuracy_score(data.y_test, model.predict(data.x_test)))
    return OnnxModel(to_onnx(model, data.classes, data.x_train).SerializeToString(), accuracy)


def put_version(folder: Path, version: int, model: OnnxModel) -> Path:
    """`model` as `<folder>/<version>/model.onnx` (written beside, then moved in whole, as a
    deployment would, so a follower never reads half a file); the version's folder."""
    target = folder / str(version)
    staging = folder / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / MODEL_FILE).write_bytes(model.onnx)
    (staging / TAGS_FILE).write_text(json.dumps({"test_accuracy": f"{model.test_accuracy:.4f}"}))
    staging.rename(target)
    return target
