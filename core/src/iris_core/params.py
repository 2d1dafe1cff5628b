"""Typed view of `params.yaml`, the one source of the pipeline's parameters and of the names
every part shares (registered models, alias, experiment, promotion threshold).

The training stages read the file DVC gives them (`--params`). Services read the copy packaged
with this module (`iris_core/params.yaml`, a link to the repository's file, so the two cannot
differ): their settings take their defaults from it, and environment variables override them.
A wrong key or value fails with the file and the key named.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import as_file, files
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: The names of iris_core.FEATURES (a test keeps the two equal).
Feature = Literal["sepal_length", "sepal_width", "petal_length", "petal_width"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Strict):
    url: str
    member: str = "iris.data"
    timeout_s: Annotated[float, Field(gt=0)] = 10


class Erratum(_Strict):
    sample: Annotated[int, Field(ge=1, description="1-based row number in the UCI file")]
    feature: Feature
    value: Annotated[float, Field(gt=0, lt=100)]


class PrepareParams(_Strict):
    errata: list[Erratum] = []
    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: int = 42


class TrainParams(_Strict):
    hidden_layers: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    neurons: Annotated[int, Field(ge=1)] = 10
    epochs: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    validation_size: Annotated[float, Field(gt=0, lt=1)] = 0.25
    seed: int = 42


Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class RegistryParams(_Strict):
    """Where runs are tracked and what they are registered as: training, fine-tuning and
    serving must agree on these, so they are written once, here."""

    experiment: Name
    onnx_model_name: Name
    sklearn_model_name: Name
    alias: Name
    accuracy_above: Annotated[float, Field(ge=0, le=1)]
    promotion: Literal["direct", "gated"] = "direct"
    challenger_alias: Name = "challenger"
    previous_alias: Name = "previous"

    @model_validator(mode="after")
    def _aliases_differ(self) -> RegistryParams:
        aliases = [self.alias, self.challenger_alias, self.previous_alias]
        if len(set(aliases)) != len(aliases):
            raise ValueError(f"alias, challenger_alias and previous_alias must differ: {aliases}")
        return self


def promotes(test_accuracy: float, accuracy_above: float) -> bool:
    """Whether a new version with this test accuracy takes the alias: strictly above the
    threshold, for a trained model and a fine-tuned one alike."""
    return test_accuracy > accuracy_above


class GateParams(_Strict):
    """When live evidence promotes or retires a challenger (gated promotion)."""

    rule_version: Annotated[int, Field(ge=1)]
    min_rows: Annotated[int, Field(ge=1)]
    significance: Annotated[float, Field(gt=0, lt=1)]
    confidence: Annotated[float, Field(gt=0, lt=1)]
    max_rows: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _rows_in_order(self) -> GateParams:
        if self.max_rows < self.min_rows:
            raise ValueError(f"max_rows ({self.max_rows}) is below min_rows ({self.min_rows})")
        return self


class FeedbackParams(_Strict):
    """How feedback turns into fine-tunes: the API and the flow must agree on it."""

    every: Annotated[int, Field(ge=1)]


class Params(_Strict):
    data: DataParams
    prepare: PrepareParams
    train: TrainParams
    registry: RegistryParams
    feedback: FeedbackParams
    gate: GateParams


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or has a wrong key or value."""


def load_params(path: Path) -> Params:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ParamsError(f"{path}: cannot read parameters: {e}") from e
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ParamsError(f"{path}: {problems}") from e


@cache
def packaged() -> Params:
    """The parameters packaged with iris_core: the defaults of every service's settings."""
    with as_file(files("iris_core") / "params.yaml") as path:
        return load_params(path)


def registry() -> RegistryParams:
    return packaged().registry


def feedback() -> FeedbackParams:
    return packaged().feedback


def gate() -> GateParams:
    return packaged().gate
