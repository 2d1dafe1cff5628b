"""Settings of the API, from environment variables prefixed IRIS_API_ (read at start, not import)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, HttpUrl, ValidationError, field_validator
from pydantic_core.core_schema import ValidationInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from iris_core.params import registry

ENV_PREFIX = "IRIS_API_"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    tracking_uri: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:5000"),
        # MLflow's own variable works too, so one setting serves training and serving.
        validation_alias=AliasChoices("IRIS_API_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking server (its registry and artifact proxy)",
    )
    model_name: str = Field(
        default_factory=lambda: registry().onnx_model_name,
        min_length=1,
        description="registered ONNX model (default: params.yaml registry.onnx_model_name)",
    )
    model_alias: str = Field(
        default_factory=lambda: registry().alias,
        min_length=1,
        description="alias to follow; `latest` = newest version (default: registry.alias)",
    )
    poll_interval_s: float = Field(10.0, gt=0, le=3600, description="registry check period")
    registry_timeout_s: float = Field(5.0, gt=0, le=300, description="per MLflow request")
    ort_threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads")
    batch_limit: int = Field(1000, ge=1, le=100_000, description="rows per batch request")
    v2_model_name: str = Field("iris", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    prefect_api_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:4200/api"),
        validation_alias=AliasChoices("IRIS_API_PREFECT_API_URL", "PREFECT_API_URL"),
        description="Prefect server API, where /suggest creates fine-tune flow runs",
    )
    feedback_deployment: str = Field(
        "iris-finetune/local",
        pattern=r"^[^/]+/[^/]+$",
        description="`flow/deployment` that /suggest runs (prefect.yaml)",
    )
    prefect_timeout_s: float = Field(5.0, gt=0, le=300, description="per Prefect request")
    prefect_retries: int = Field(
        7, ge=0, le=20, description="retries of a busy (503) Prefect: 0.2 s doubling, max 3 s"
    )
    prefect_concurrency: int = Field(
        1,
        ge=1,
        le=64,
        description="requests to Prefect at a time (1 for SQLite; more with PostgreSQL)",
    )
    prefect_poll_s: float = Field(
        30.0, ge=0, le=3600, description="flow run counts for the metrics; 0 = off"
    )
    input_monitoring: bool = Field(
        True, description="per-row input histograms and drift scores (off: neither is exported)"
    )
    drift_window: int = Field(
        1000, ge=10, le=1_000_000, description="recent input rows the drift score compares"
    )
    drift_min_rows: int = Field(
        100, ge=1, le=1_000_000, description="rows in the window before a drift score is given"
    )
    host: str = Field("127.0.0.1", description="address uvicorn binds (0.0.0.0 in a container)")
    port: int = Field(8000, ge=1, le=65535)
    fast_path: bool = Field(
        True, description="answer POST /predict and V2 infer without FastAPI's routing"
    )
    access_log: bool = Field(False, description="one log line per request (costs throughput)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("drift_min_rows")
    @classmethod
    def _fits_the_window(cls, value: int, info: ValidationInfo) -> int:
        window = info.data.get("drift_window")
        if window is not None and value > window:
            raise ValueError(f"must be at most IRIS_API_DRIFT_WINDOW ({window})")
        return value

    @property
    def tracking_url(self) -> str:
        return str(self.tracking_uri).rstrip("/")

    @property
    def prefect_url(self) -> str:
        return str(self.prefect_api_url).rstrip("/")


def describe(error: ValidationError) -> str:
    """One line per bad setting, named by its environment variable."""
    lines = []
    for e in error.errors():
        name = ENV_PREFIX + "_".join(str(part) for part in e["loc"]).upper()
        lines.append(f"{name}: {e['msg']}")
    return "\n".join(lines)
