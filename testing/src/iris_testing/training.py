"""Small training set-ups: a grid that trains in seconds, registry names of their own, and
what a trained and registered model is."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from iris_core.params import RegistryParams, TrainParams, registry
from iris_training.train import Outcome


def small_params(**overrides: object) -> TrainParams:
    """A small grid."""
    values: dict[str, object] = {"hidden_layers": [2, 3], "epochs": [300, 600]}
    return TrainParams.model_validate(values | overrides)


def own_registry(**overrides: object) -> RegistryParams:
    """The project's registry parameters with an experiment and model names of their own, so
    tests never collide."""
    tag = uuid.uuid4().hex[:8]
    project = registry()
    values: dict[str, object] = project.model_dump() | {
        "experiment": f"test-{tag}",
        "onnx_model_name": f"{project.onnx_model_name}-{tag}",
        "sklearn_model_name": f"{project.sklearn_model_name}-{tag}",
    }
    return RegistryParams.model_validate(values | overrides)


@dataclass(frozen=True)
class Registered:
    """A grid trained by the training code and registered under names of its own."""

    params: TrainParams
    registry: RegistryParams
    outcome: Outcome
    tracking_uri: str

    @property
    def model_name(self) -> str:
        return self.registry.onnx_model_name
