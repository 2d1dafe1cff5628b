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
    """The version of `name` that carries `alias`, or None when there is none.

    MLflow answers 404 RESOURCE_DOES_NOT_EXIST for an unknown model, but 400
    INVALID_PARAMETER_VALUE ("alias ... not found") for a known model without that alias.
    """
    response = httpx.get(
        f"{tracking_url.rstrip('/')}/api/2.0/mlflow/registered-models/alias",
        params={"name": name, "alias": alias},
        timeout=timeout_s,
    )
    if response.status_code == httpx.codes.NOT_FOUND or _alias_not_found(response):
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


def _alias_not_found(response: httpx.Response) -> bool:
    if response.status_code != httpx.codes.BAD_REQUEST:
        return False
    try:
        error = response.json()
    except ValueError:
        return False
    return bool(
        error.get("error_code") == "INVALID_PARAMETER_VALUE"
        and "not found" in str(error.get("message", ""))
    )
