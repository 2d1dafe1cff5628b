"""Typed view of `params.yaml`: a wrong key or value fails with the file and the key named."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    accuracy_threshold: Annotated[float, Field(ge=0, le=1)] = 0.9
    experiment: str = "IrisDev"
    onnx_model_name: str = "IrisModel"
    sklearn_model_name: str = "IrisDev"
    alias: str = "champion"


class Params(_Strict):
    data: DataParams
    prepare: PrepareParams
    train: TrainParams


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
