"""The fine-tune without Prefect: its settings, the row a run is started with, the warm start
on the real data, prefect.yaml's deployments, and a real MLflow server for the promotion rule.
The feedback store has tests of its own (test_feedback_store.py)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from prefect.flows import Flow, load_flow_from_entrypoint
from pydantic import ValidationError
from sklearn.neural_network import MLPClassifier

from iris_api.settings import ApiSettings
from iris_core import CLASS_NAMES, EXAMPLES
from iris_core.feedback import STORE_URL, Feedback
from iris_finetune.flow import FLOW_NAME, given_row
from iris_finetune.settings import FinetuneSettings
from iris_finetune.tune import feedback_arrays, fine_tune, warm_start
from iris_testing.training import Registered
from iris_training.dataset import load_dataset

ROOT = Path(__file__).resolve().parents[2]
ROW = Feedback((5.1, 3.5, 1.4, 0.2), "Iris-setosa")


def test_the_store_url_is_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # A flow run works in a temporary folder: a relative SQLite path would lose the feedback.
    monkeypatch.setenv(STORE_URL, "sqlite:///feedback.db")
    with pytest.raises(ValidationError, match="absolute"):
        FinetuneSettings()
    monkeypatch.delenv(STORE_URL)
    with pytest.raises(ValidationError, match=STORE_URL):
        FinetuneSettings()


def test_a_run_takes_a_whole_row_of_feedback_or_none() -> None:
    assert given_row((None, None, None, None), None) is None
    assert given_row((5.1, 3.5, 1.4, 0.2), "Iris-setosa") == ROW
    for partial in (((5.1, 3.5, 1.4, 0.2), None), ((5.1, None, 1.4, 0.2), "Iris-setosa")):
        with pytest.raises(ValueError, match="all four measurements and class_name"):
            given_row(*partial)


def test_warm_start_continues_with_more_iterations_a_lower_rate_and_weights(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STORE_URL, f"sqlite:///{tmp_path / 'feedback.db'}")
    settings = FinetuneSettings()
    data = load_dataset(data_dir)
    base = MLPClassifier(hidden_layer_sizes=(10, 10), max_iter=300, random_state=0)
    base.fit(data.x_train, data.y_train)
    rows = [Feedback((6.4, 3.2, 4.5, 1.5), "Iris-versicolor")] * 5
    feedback = feedback_arrays(rows, data.classes)
    assert feedback[1].tolist() == [1] * 5

    def tuned(original_weight: float) -> MLPClassifier:
        model = MLPClassifier(hidden_layer_sizes=(10, 10), max_iter=300, random_state=0)
        model.fit(data.x_train, data.y_train)
        s = settings.model_copy(
            update={
                "original_weight": original_weight,
                "extra_iterations": 7,
                "learning_rate_divisor": 4.0,
            }
        )
        return warm_start(model, data, feedback, s)

    model = tuned(0.7)
    assert model.max_iter == 307
    assert model.learning_rate_init == pytest.approx(base.learning_rate_init / 4)
    assert model.warm_start is True
    # It continued from the trained weights (a fresh start would be far from them) ...
    drift = max(float(np.abs(a - b).max()) for a, b in zip(model.coefs_, base.coefs_, strict=True))
    assert 0 < drift < 0.5
    # ... and the weights of the original rows count.
    other = tuned(0.1)
    assert any(not np.allclose(a, b) for a, b in zip(model.coefs_, other.coefs_, strict=True))


def test_prefect_yaml_deploys_one_flow_two_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """`local` is deployed for real by the feedback tests and `make up`; the `kubernetes` one
    needs a cluster, so here: every deployment runs the fine-tuning flow, the API's default
    deployment is one of them, and a pod given the kubernetes deployment's env gets valid
    fine-tune settings from it."""
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    for d in deployments.values():
        loaded: Flow[..., Any] = load_flow_from_entrypoint(d["entrypoint"], False)
        assert loaded.name == FLOW_NAME
    flow, _, name = ApiSettings.model_fields["feedback_deployment"].default.partition("/")
    assert flow == FLOW_NAME
    assert name in deployments

    env = deployments["kubernetes"]["work_pool"]["job_variables"]["env"]
    for key in [k for k in os.environ if k.startswith("IRIS_FINETUNE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert STORE_URL not in env  # a secret: the base job template brings it
    monkeypatch.setenv(STORE_URL, "postgresql://feedback:secret@postgres:5432/feedback")
    settings = FinetuneSettings()
    # ... read from the variables the pod is given (not their defaults)
    assert settings.tracking_uri == env["MLFLOW_TRACKING_URI"]


#: Five suggestions, as the feedback tests send them: a textbook flower of each class in turn.
ROWS = [Feedback(EXAMPLES[CLASS_NAMES[i % 3]], CLASS_NAMES[i % 3]) for i in range(5)]


def _champions(
    registered: Registered, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **update: object
) -> FinetuneSettings:
    """Settings whose champions are copies of the session's, under names of their own, so a
    fine-tune's new versions and alias moves touch no other test's models."""
    tag = uuid.uuid4().hex[:8]
    client = MlflowClient(registered.tracking_uri)
    reg = registered.registry
    names = {}
    for source in (reg.sklearn_model_name, reg.onnx_model_name):
        version = registered.outcome.versions[source]
        copy = client.copy_model_version(f"models:/{source}/{version}", f"{source}-{tag}")
        client.set_registered_model_alias(copy.name, reg.alias, copy.version)
        names[source] = copy.name
    monkeypatch.setenv(STORE_URL, f"sqlite:///{tmp_path / 'feedback.db'}")
    return FinetuneSettings().model_copy(
        update={
            "tracking_uri": registered.tracking_uri,
            "sklearn_model_name": names[reg.sklearn_model_name],
            "onnx_model_name": names[reg.onnx_model_name],
            "alias": reg.alias,
            "experiment": f"finetune-{tag}",
        }
        | update
    )


@pytest.mark.integration  # a real MLflow server
@pytest.mark.parametrize(("offset", "registers"), [(0.0, False), (-1e-9, True)])
def test_a_fine_tune_registers_only_above_the_threshold(
    offset: float,
    registers: bool,
    registered: Registered,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The same fine-tune twice (same parent, same rows: it is deterministic): a threshold
    equal to the accuracy it reaches registers nothing and leaves the alias alone; a hair
    below it registers both models, which take the alias."""
    probe = fine_tune(_champions(registered, monkeypatch, tmp_path), ROWS)
    settings = _champions(
        registered, monkeypatch, tmp_path, accuracy_above=probe.test_accuracy + offset
    )
    outcome = fine_tune(settings, ROWS)
    assert outcome.test_accuracy == probe.test_accuracy
    assert outcome.reason.startswith(
        f"test accuracy {probe.test_accuracy:.4f} is {'above' if registers else 'not above'}"
    )
    assert bool(outcome.registered) is registers
    client = MlflowClient(registered.tracking_uri)
    assert client.get_run(outcome.run_id).data.tags["registered"] == str(registers).lower()
    for name in (settings.sklearn_model_name, settings.onnx_model_name):
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == (2 if registers else 1)
        alias = client.get_model_version_by_alias(name, settings.alias)
        assert alias.version == (outcome.registered[name] if registers else "1")
