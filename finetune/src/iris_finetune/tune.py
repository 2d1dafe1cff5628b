"""Fine-tune the champion on the feedback: plain functions, no Prefect (the flow wraps them).

The scikit-learn model that carries the alias (`models:/<sklearn_model_name>@<alias>`, names
from the settings) continues training with `warm_start`,
`max_iter` + 5 and a tenth of its learning rate, on its own training rows (weight 0.7) plus
the feedback rows (weight 1.0). Its data come from the champion's run (`data/`), so a fine-tune
needs no files of its own. The result is tracked in MLflow and, if its test accuracy is above
the threshold, registered as new versions of both models, which take the alias.

Four steps, each a function of the one before (`load_champion`, `tune`, `evaluate`,
`register`): the flow runs each as a Prefect task, so a failed run shows the step it stopped
in; `fine_tune` runs them in a row without Prefect. They take the feedback rows as a list and
know nothing of the store, so how a flow run collects its rows is the flow's business.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.sklearn
import numpy as np
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.neural_network import MLPClassifier

from iris_core import FEATURES
from iris_core.feedback import Feedback
from iris_core.params import promotes
from iris_finetune.settings import FinetuneSettings
from iris_training.data import DataError
from iris_training.dataset import Dataset, load_dataset
from iris_training.tracking import (
    DATA_ARTIFACTS,
    check_tracking_server,
    log_data,
    log_models,
    register_versions,
)

log = logging.getLogger(__name__)

#: Tags on the fine-tune run and on the versions it registers.
PARENT_VERSION = "parent_version"
FEEDBACK_ROWS = "feedback_rows"


class TuneError(RuntimeError):
    """A fine-tune could not run: no champion, no data in its run, MLflow unreachable."""


@dataclass(frozen=True, slots=True)
class TuneOutcome:
    rows: int
    run_id: str
    parent_versions: dict[str, str]  # registered model name -> champion version tuned from
    test_accuracy: float
    parent_test_accuracy: float
    registered: dict[str, str]  # name -> new version; empty when not registered
    reason: str  # why it was or was not registered
    timings_s: dict[str, float] = field(default_factory=dict)


def champion(client: MlflowClient, name: str, alias: str) -> ModelVersion:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        raise TuneError(f"no version of {name!r} has the alias {alias!r}: {e.message}") from e


def champion_rows(client: MlflowClient, name: str, alias: str) -> int:
    """How many feedback rows the current champion was tuned on (0 for a trained one)."""
    return int(champion(client, name, alias).tags.get(FEEDBACK_ROWS, "0"))


def parent_data(version: ModelVersion, folder: Path) -> Dataset:
    """Train/test/classes the champion was made from, downloaded from its run."""
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=version.run_id, artifact_path=DATA_ARTIFACTS, dst_path=str(folder)
        )
        return load_dataset(Path(local))
    except (MlflowException, OSError, DataError) as e:
        raise TuneError(
            f"{version.name} version {version.version} (run {version.run_id}) has no usable "
            f"'{DATA_ARTIFACTS}/' artifacts ({e}): retrain it with the current training code"
        ) from e


def feedback_arrays(rows: list[Feedback], classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([r.measurements for r in rows], dtype=np.float64).reshape(-1, len(FEATURES))
    y = np.array([classes.index(r.class_name) for r in rows], dtype=np.int64)
    return x, y


def warm_start(
    model: MLPClassifier,
    data: Dataset,
    feedback: tuple[np.ndarray, np.ndarray],
    settings: FinetuneSettings,
) -> MLPClassifier:
    """Continue training `model` (in place) on train + feedback rows, weighted."""
    x = np.vstack([data.x_train, feedback[0]])
    y = np.concatenate([data.y_train, feedback[1]])
    weights = np.concatenate(
        [
            np.full(len(data.y_train), settings.original_weight),
            np.full(len(feedback[1]), settings.feedback_weight),
        ]
    )
    model.set_params(
        max_iter=model.max_iter + settings.extra_iterations,
        learning_rate_init=model.learning_rate_init / settings.learning_rate_divisor,
        warm_start=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y, sample_weight=weights)
    return model


def _write_feedback_csv(path: Path, rows: list[Feedback]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*FEATURES, "class_name"])
        writer.writerows([*r.measurements, r.class_name] for r in rows)


@dataclass(frozen=True, slots=True)
class Parent:
    """The champion a fine-tune starts from, loaded: both registered versions, the scikit-learn
    model and the data it was made from (its files downloaded to `data_dir`, which the fine-tune
    logs again with its own model)."""

    versions: dict[str, ModelVersion]  # registered model name -> the version with the alias
    sklearn: ModelVersion  # the scikit-learn one of `versions`: the model tuned from
    model: MLPClassifier
    data: Dataset
    data_dir: Path
    load_s: float


@dataclass(frozen=True, slots=True)
class Tuned:
    """The parent's model trained further on the feedback rows (the same object: the parent's
    `model` is tuned in place), and how the parent did before it."""

    model: MLPClassifier
    rows: list[Feedback]
    feedback: tuple[np.ndarray, np.ndarray]  # the rows as model inputs and label indices
    parent_test_accuracy: float
    feedback_accuracy_before: float
    fit_s: float


@dataclass(frozen=True, slots=True)
class Evaluated:
    """The tuned model's test accuracy, whether it is promoted, and its MLflow run (both models
    logged in it, ready to register): everything `register` needs, as JSON-able values, so the
    flow keeps it with its claim (a checkpoint) and a run that takes the fine-tune over after
    this one died registers it without tuning again."""

    rows: int
    run_id: str
    test_accuracy: float
    parent_test_accuracy: float
    promoted: bool
    reason: str  # why it is or is not promoted
    model_uris: dict[str, str]  # registered model name -> logged model URI
    parent_versions: dict[str, str]  # registered model name -> the champion version tuned from
    timings_s: dict[str, float] = field(default_factory=dict)

    def checkpoint(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "run_id": self.run_id,
            "test_accuracy": self.test_accuracy,
            "parent_test_accuracy": self.parent_test_accuracy,
            "promoted": self.promoted,
            "reason": self.reason,
            "model_uris": self.model_uris,
            "parent_versions": self.parent_versions,
            "timings_s": self.timings_s,
        }

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any]) -> Evaluated:
        return cls(
            rows=int(data["rows"]),
            run_id=str(data["run_id"]),
            test_accuracy=float(data["test_accuracy"]),
            parent_test_accuracy=float(data["parent_test_accuracy"]),
            promoted=bool(data["promoted"]),
            reason=str(data["reason"]),
            model_uris={str(k): str(v) for k, v in data["model_uris"].items()},
            parent_versions={str(k): str(v) for k, v in data["parent_versions"].items()},
            timings_s={str(k): float(v) for k, v in data.get("timings_s", {}).items()},
        )


def _mlflow(settings: FinetuneSettings) -> MlflowClient:
    """Point MLflow's fluent API at the tracking server; a client for it. Each step calls it, so
    a step does not depend on global state another step left behind."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri)


def load_champion(settings: FinetuneSettings, folder: Path) -> Parent:
    """The versions with the alias, the scikit-learn model and its data (downloaded into
    `folder`, which must outlive the fine-tune: its data are logged again with the result)."""
    check_tracking_server(settings.tracking_uri)
    client = _mlflow(settings)
    start = time.perf_counter()
    versions = {
        name: champion(client, name, settings.alias)
        for name in (settings.sklearn_model_name, settings.onnx_model_name)
    }
    parent = versions[settings.sklearn_model_name]
    data = parent_data(parent, folder)
    model: MLPClassifier = mlflow.sklearn.load_model(f"models:/{parent.name}/{parent.version}")
    return Parent(
        versions, parent, model, data, folder / DATA_ARTIFACTS, time.perf_counter() - start
    )


def tune(settings: FinetuneSettings, parent: Parent, rows: list[Feedback]) -> Tuned:
    """Measure the parent on the test and feedback rows, then continue its training on them."""
    data = parent.data
    before = float(accuracy_score(data.y_test, parent.model.predict(data.x_test)))
    feedback = feedback_arrays(rows, data.classes)
    fb_before = float(accuracy_score(feedback[1], parent.model.predict(feedback[0])))
    start = time.perf_counter()
    model = warm_start(parent.model, data, feedback, settings)
    return Tuned(model, rows, feedback, before, fb_before, time.perf_counter() - start)


def evaluate(
    settings: FinetuneSettings, parent: Parent, tuned: Tuned, flow_run_id: str = ""
) -> Evaluated:
    """Test accuracy and the promotion rule (`promotes`: strictly above the threshold); an
    MLflow run with the parameters, metrics, data (feedback rows included) and both models."""
    data, model, rows = parent.data, tuned.model, tuned.rows
    predicted = model.predict(data.x_test)
    accuracy = float(accuracy_score(data.y_test, predicted))
    fb_after = float(accuracy_score(tuned.feedback[1], model.predict(tuned.feedback[0])))
    good = promotes(accuracy, settings.accuracy_above)
    reason = (
        f"test accuracy {accuracy:.4f} is {'above' if good else 'not above'} "
        f"the threshold {settings.accuracy_above:.4f}"
    )

    _mlflow(settings)
    start = time.perf_counter()
    tags = {
        PARENT_VERSION: parent.sklearn.version,
        FEEDBACK_ROWS: str(len(rows)),
        "parent_run_id": parent.sklearn.run_id or "",
        "prefect_flow_run_id": flow_run_id,
        "kind": "finetune",
    }
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name=f"finetune-{len(rows)}", tags=tags) as run:
        mlflow.log_params(
            {
                "max_iter": model.max_iter,
                "learning_rate_init": model.learning_rate_init,
                "warm_start": True,
                "original_weight": settings.original_weight,
                "feedback_weight": settings.feedback_weight,
                "n_train": len(data.y_train),
                "n_feedback": len(rows),
                "accuracy_above": settings.accuracy_above,
            }
        )
        mlflow.log_metrics(
            {
                "parent_test_accuracy": tuned.parent_test_accuracy,
                "feedback_accuracy_before": tuned.feedback_accuracy_before,
                "feedback_accuracy_after": fb_after,
                "n_iter": float(model.n_iter_),
            }
        )
        _write_feedback_csv(parent.data_dir / "feedback.csv", rows)
        log_data(parent.data_dir)
        mlflow.log_artifact(str(parent.data_dir / "feedback.csv"), DATA_ARTIFACTS)
        sk_info, onnx_info = log_models(model, data, predicted, accuracy)
        mlflow.set_tag("registered", str(good).lower())
        mlflow.set_tag("reason", reason)
    uris = {
        settings.sklearn_model_name: sk_info.model_uri,
        settings.onnx_model_name: onnx_info.model_uri,
    }
    return Evaluated(
        rows=len(rows),
        run_id=run.info.run_id,
        test_accuracy=accuracy,
        parent_test_accuracy=tuned.parent_test_accuracy,
        promoted=good,
        reason=reason,
        model_uris=uris,
        parent_versions={name: v.version for name, v in parent.versions.items()},
        timings_s={
            "load_s": parent.load_s,
            "fit_s": tuned.fit_s,
            "track_s": time.perf_counter() - start,
        },
    )


def register(settings: FinetuneSettings, evaluated: Evaluated) -> TuneOutcome:
    """New versions of both models if promoted, once: a version this fine-tune's MLflow run
    registered before (an attempt that died after MLflow took it) is found by its
    `finetune_run_id` tag and kept, so running this again registers only what is missing and
    never a second version. The durations of every step into the run. Returns the outcome."""
    client = _mlflow(settings)
    timings = dict(evaluated.timings_s)
    registered: dict[str, str] = {}
    if evaluated.promoted:
        start = time.perf_counter()
        registered = _new_versions(client, settings, evaluated)
        timings["register_s"] = time.perf_counter() - start
        client.set_tag(
            evaluated.run_id,
            "registered_versions",
            ", ".join(f"{n} v{v}" for n, v in registered.items()),
        )
    now = int(time.time() * 1000)
    client.log_batch(
        evaluated.run_id,
        metrics=[Metric(f"duration_{name}", value, now, 0) for name, value in timings.items()],
    )
    return TuneOutcome(
        rows=evaluated.rows,
        run_id=evaluated.run_id,
        parent_versions=evaluated.parent_versions,
        test_accuracy=evaluated.test_accuracy,
        parent_test_accuracy=evaluated.parent_test_accuracy,
        registered=registered,
        reason=evaluated.reason,
        timings_s=timings,
    )


def abandon_attempts(settings: FinetuneSettings, rows: int, flow_run_id: str) -> list[str]:
    """Mark KILLED the MLflow runs an earlier attempt at the fine-tune on `rows` rows left
    RUNNING (its flow run `flow_run_id` died while it logged); the run ids."""
    client = _mlflow(settings)
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        return []
    left = client.search_runs(
        [experiment.experiment_id],
        f"tags.kind = 'finetune' and tags.{FEEDBACK_ROWS} = '{rows}' "
        f"and tags.prefect_flow_run_id = '{flow_run_id}' and attributes.status = 'RUNNING'",
    )
    for run in left:
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in left]


@dataclass(frozen=True, slots=True)
class Steps:
    """The four steps, as called: these functions here, or the flow's Prefect tasks around
    them (so the UI shows the step a run stopped in)."""

    load_champion: Callable[[FinetuneSettings, Path], Parent]
    tune: Callable[[FinetuneSettings, Parent, list[Feedback]], Tuned]
    evaluate: Callable[[FinetuneSettings, Parent, Tuned, str], Evaluated]
    register: Callable[[FinetuneSettings, Evaluated], TuneOutcome]


def fine_tune(
    settings: FinetuneSettings,
    rows: list[Feedback],
    flow_run_id: str = "",
    steps: Steps | None = None,
    between: Callable[[], None] = lambda: None,
    evaluated: Callable[[Evaluated], None] = lambda _: None,
) -> TuneOutcome:
    """Fine-tune the champion on `rows` (all feedback so far), track it, register if good: the
    four steps in a row (`steps`, default these functions). `between` runs before each step
    (the flow renews its claim there); `evaluated` gets the MLflow run's result before it is
    registered (the flow keeps it as its checkpoint)."""
    steps = steps or STEPS
    with tempfile.TemporaryDirectory(prefix="iris-finetune-") as tmp:
        between()
        parent = steps.load_champion(settings, Path(tmp))
        between()
        tuned = steps.tune(settings, parent, rows)
        between()
        result = steps.evaluate(settings, parent, tuned, flow_run_id)
        evaluated(result)
        between()
        return steps.register(settings, result)


STEPS = Steps(load_champion, tune, evaluate, register)


def _new_versions(
    client: MlflowClient, settings: FinetuneSettings, evaluated: Evaluated
) -> dict[str, str]:
    """Both models' versions of this fine-tune: found (registered by an earlier attempt) or
    new. The alias moves to them unless a champion tuned on more feedback is already in place
    (a late or retried fine-tune never moves the alias backwards)."""
    rows, run_id = evaluated.rows, evaluated.run_id
    newer = champion_rows(client, settings.sklearn_model_name, settings.alias) > rows
    registered: dict[str, str] = {}
    for name, uri in evaluated.model_uris.items():
        found = client.search_model_versions(
            f"name = '{name}' and tags.finetune_run_id = '{run_id}'"
        )
        if found:
            version = min(found, key=lambda v: int(v.version)).version
            log.info("%s version %s of this fine-tune was registered before", name, version)
            registered[name] = str(version)
            if not newer:
                client.set_registered_model_alias(name, settings.alias, str(version))
            continue
        tags = {
            PARENT_VERSION: evaluated.parent_versions[name],
            FEEDBACK_ROWS: str(rows),
            "test_accuracy": f"{evaluated.test_accuracy:.4f}",
            "finetune_run_id": run_id,
        }
        registered |= register_versions(
            client, {name: uri}, tags, None if newer else settings.alias
        )
    if newer:
        log.warning(
            "the version with alias %r was tuned on more than %d rows: alias left alone",
            settings.alias,
            rows,
        )
    return registered
