"""Settings of the embedded default, from the environment (prefix IRIS_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    """Where local state lives and which loopback ports the services use (usual defaults)."""

    model_config = SettingsConfigDict(env_prefix="IRIS_", extra="ignore")

    state_dir: Path = Field(Path(".iris"), description="MLflow/Prefect state, logs, pid files")
    host: str = Field("127.0.0.1", description="Address every local service binds to")
    mlflow_port: int = Field(5000, ge=1, le=65535)
    # IRIS_API_PORT: the same variable the API itself reads.
    api_port: int = Field(8000, ge=1, le=65535)
    prefect_port: int = Field(4200, ge=1, le=65535)
    worker_health_port: int = Field(4201, ge=1, le=65535, description="local worker's /health")
    work_pool: str = Field("iris-local", description="Prefect process work pool (local runs)")
    prometheus_port: int = Field(9090, ge=1, le=65535, description="when `prometheus` is on PATH")
    database: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="sqlite: files under the state folder; postgres: one local PostgreSQL "
        "cluster for MLflow, Prefect and the feedback store",
    )
    postgres_port: int = Field(
        5433, ge=1, le=65535, description="the local PostgreSQL cluster (IRIS_DATABASE=postgres)"
    )
    params: Path = Field(Path("params.yaml"), description="Pipeline parameters (registry names)")
    start_timeout_s: float = Field(120.0, gt=0, description="How long a service may take to start")

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_url(self) -> str:
        """The Prefect server's API (its UI is the same address without /api)."""
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def feedback_db(self) -> Path:
        return (self.state_dir / "feedback.db").resolve()

    @property
    def postgres_dir(self) -> Path:
        """The local PostgreSQL cluster: data, socket, log."""
        return self.state_dir / "postgres"

    @property
    def postgres_credentials(self) -> Path:
        """The roles' passwords, in PostgreSQL's password file format (0600)."""
        return self.state_dir / "postgres.pgpass"

    @property
    def feedback_token_file(self) -> Path:
        """The bearer token /suggest requires (0600)."""
        return self.state_dir / "feedback.token"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"
