"""Settings of the fine-tuning flow, from the environment only (prefix IRIS_FINETUNE_).

A flow run reads them where it runs: the local worker's environment, or the pod's (the
deployment's job variables). The experiment, registry names, alias and threshold default to
params.yaml's `registry` section and the fine-tune interval to its `feedback` section
(`iris_core.params`), which training and the API read too. The feedback store's URL is
`IRIS_FEEDBACK_STORE_URL`, the one variable the API and the flow share.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from iris_core.feedback.database import STORE_URL, Location
from iris_core.params import feedback, registry


class FinetuneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IRIS_FINETUNE_", extra="ignore")

    tracking_uri: str = Field(
        "http://127.0.0.1:5000",
        validation_alias=AliasChoices("IRIS_FINETUNE_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking server (also read from MLFLOW_TRACKING_URI)",
    )
    store_url: str = Field(
        validation_alias=STORE_URL,
        description="The feedback store: sqlite:////absolute/path.db or postgresql://...",
    )
    every: int = Field(
        default_factory=lambda: feedback().every,
        ge=1,
        description="Fine-tune at every multiple of this many applied rows",
    )
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
    lease_s: float = Field(
        60.0,
        gt=0,
        description="How long a claimed fine-tune stays a run's own without a renewal (renewed "
        "every third of it while the run works); then another run takes it over",
    )

    @field_validator("store_url")
    @classmethod
    def _a_store(cls, url: str) -> str:
        # A SQLite path must be absolute: a flow run works in a temporary folder (the
        # worker's), where a relative path would keep feedback that is then lost.
        Location.parse(url)
        return url
