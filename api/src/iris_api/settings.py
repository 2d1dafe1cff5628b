"""Settings of the API, from environment variables prefixed IRIS_API_ (read at start, not import)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from limits import parse
from pydantic import AliasChoices, Field, HttpUrl, SecretStr, ValidationError, field_validator
from pydantic_core.core_schema import ValidationInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from iris_core.feedback.database import STORE_URL, Location
from iris_core.params import feedback, registry

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
    promotion: Literal["direct", "gated"] = Field(
        default_factory=lambda: registry().promotion,
        description="gated: also load the version with challenger_alias and score it beside "
        "the served one (shadow), and record both answers with feedback (params.yaml "
        "registry.promotion)",
    )
    challenger_alias: str = Field(
        default_factory=lambda: registry().challenger_alias,
        min_length=1,
        description="the challenger's alias in gated promotion (registry.challenger_alias)",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="the secret of MLflow's registry webhook: POST /registry/events checks its "
        "signature and then asks the registry at once (unset: the endpoint answers 404)",
    )
    peers: str | None = Field(
        None,
        description="host:port of the other API replicas (a headless Service's name, "
        "resolved to every address), to which a registry event is passed on",
    )
    model_dir: Path | None = Field(
        None,
        description="serve the newest `<version>/model.onnx` of this folder instead of the "
        "registry alias (unset: the registry)",
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
    feedback_store_url: str | None = Field(
        None,
        validation_alias=STORE_URL,
        description="the feedback store (sqlite:////abs/path.db or postgresql://...); "
        "unset: /suggest answers 503",
    )
    feedback_token: SecretStr | None = Field(
        None, min_length=16, description="bearer token /suggest requires (unset: none)"
    )
    feedback_rate_limit: str = Field(
        "60/minute",
        description="suggestions one client (address) may send, as `N/second|minute|hour`",
    )
    feedback_every: int = Field(
        default_factory=lambda: feedback().every,
        ge=1,
        description="fine-tune interval in rows (params.yaml feedback.every; as the flow's)",
    )
    feedback_check_s: float = Field(
        10.0, gt=0, le=3600, description="how often the backlog is read (metrics, catch-up)"
    )
    feedback_stale_s: float = Field(
        60.0, gt=0, le=86_400, description="a row pending (or fine-tune owed) longer: catch-up run"
    )
    feedback_start_timeout_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="a run not started (SCHEDULED past its start, or PENDING) this long is "
        "replaced by a new one",
    )
    feedback_run_wait_s: float = Field(
        2.0, ge=0, le=60, description="how long /suggest waits to name the run that applies it"
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
    proxy_headers: bool = Field(
        False,
        description="take the client's address from X-Forwarded-For (and the scheme from "
        "X-Forwarded-Proto) when the peer is in IRIS_API_FORWARDED_ALLOW_IPS: behind a proxy, "
        "the /suggest rate limit and the access log then see the real client",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        min_length=1,
        description="peers (comma-separated addresses or networks, `*`) whose forwarded "
        "headers are trusted when IRIS_API_PROXY_HEADERS is on",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("feedback_store_url")
    @classmethod
    def _a_store(cls, url: str | None) -> str | None:
        if url is not None:
            Location.parse(url)
        return url

    @field_validator("feedback_rate_limit")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError as e:
            raise ValueError(f"{value!r} is not a rate such as 60/minute ({e})") from e
        return value

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
        first = str(e["loc"][0]) if e["loc"] else ""
        name = (
            first  # a variable of its own (IRIS_FEEDBACK_STORE_URL, MLFLOW_TRACKING_URI)
            if first.isupper()
            else ENV_PREFIX + "_".join(str(part) for part in e["loc"]).upper()
        )
        lines.append(f"{name}: {e['msg']}")
    return "\n".join(lines)
