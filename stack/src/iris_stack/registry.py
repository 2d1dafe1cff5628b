"""Read the MLflow model registry over its REST API (no MLflow client needed)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class AliasedVersion:
    name: str
    version: str
    alias: str
    run_id: str
    tags: dict[str, str]


def version_by_alias(
    tracking_url: str, name: str, alias: str, timeout_s: float = 10.0
) -> AliasedVersion | None:
    """The version of `name` that carries `alias`, or None when there is none."""
    response = httpx.get(
        f"{tracking_url.rstrip('/')}/api/2.0/mlflow/registered-models/alias",
        params={"name": name, "alias": alias},
        timeout=timeout_s,
    )
    if response.status_code == httpx.codes.NOT_FOUND:
        return None
    response.raise_for_status()
    mv = response.json()["model_version"]
    return AliasedVersion(
        name=name,
        version=str(mv["version"]),
        alias=alias,
        run_id=mv.get("run_id", ""),
        tags={t["key"]: t["value"] for t in mv.get("tags", [])},
    )
