"""The grid search: one MLPClassifier per grid point (hidden layers x epochs from params.yaml,
`train`), fitted in parallel on a seeded split of the training rows and compared on the
held-out validation rows. No tracking here: `iris-train` records each result as it arrives,
and tests and benchmarks run the search on its own.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from tqdm import tqdm

from iris_core.params import TrainParams
from iris_training.dataset import Dataset


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
