"""Settings of the fine-tuning flow, from the environment only (prefix IRIS_FINETUNE_).

A flow run reads them where it runs: the local worker's environment, or the pod's (the
deployment's job variables). The experiment, registry names, alias and threshold default to
params.yaml's `registry` section (`iris_core.params`), which training uses too.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from iris_core.params import registry


class FinetuneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IRIS_FINETUNE_", extra="ignore")

    tracking_uri: str = Field(
        "http://127.0.0.1:5000",
        validation_alias=AliasChoices("IRIS_FINETUNE_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking server (also read from MLFLOW_TRACKING_URI)",
    )
    feedback_db: Path = Field(description="The feedback store, an absolute SQLite file path")
    every: int = Field(5, ge=1, description="Fine-tune each time the store reaches a multiple")
    accuracy_above: float = Field(
        default_factory=lambda: registry().accuracy_above,
        ge=0,
        le=1,
        description="Register only if test accuracy is strictly above this",
    )
    sklearn_model_name: str = Field(
        default_factory=lambda: registry().sklearn_model_name,
        min_length=1,
        description="Registered scikit-learn model (fine-tuned from)",
    )
    onnx_model_name: str = Field(
        default_factory=lambda: registry().onnx_model_name,
        min_length=1,
        description="Registered ONNX model (served)",
    )
    alias: str = Field(
        default_factory=lambda: registry().alias,
        min_length=1,
        description="Alias fine-tuned from, and moved on success",
    )
    experiment: str = Field(
        default_factory=lambda: registry().experiment,
        min_length=1,
        description="MLflow experiment of the fine-tune runs",
    )
    extra_iterations: int = Field(5, ge=0, description="max_iter of the parent model plus this")
    learning_rate_divisor: float = Field(10.0, gt=0, description="learning_rate_init over this")
    original_weight: float = Field(0.7, gt=0, description="sample_weight of the training rows")
    feedback_weight: float = Field(1.0, gt=0, description="sample_weight of the feedback rows")
    order_timeout_s: float = Field(
        600.0, gt=0, description="How long a fine-tune waits for the one before it"
    )

    @field_validator("feedback_db")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # A flow run works in a temporary folder (the worker's): a relative path would store
        # feedback there, and it would be lost.
        if not path.is_absolute():
            raise ValueError("must be an absolute path (flow runs work in a temporary folder)")
        return path
