"""The MLflow model registry over its REST API: no MLflow client, so the API image stays lean.

Two MLflow answers to know: an unknown model is 404 RESOURCE_DOES_NOT_EXIST, but a known model
without the alias is 400 INVALID_PARAMETER_VALUE ("alias ... not found"); both mean "no such
version" here. Artifacts are read through the tracking server's artifact proxy
(`mlflow-artifacts:/...`, MLflow's default `--serve-artifacts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

import httpx

#: An alias that is not stored in the registry: the newest version of the model.
LATEST = "latest"


class RegistryError(Exception):
    """The registry could not be reached or gave an answer we cannot use."""


@dataclass(frozen=True, slots=True)
class AliasedVersion:
    name: str
    version: str
    alias: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    #: READY once its files are in place (PENDING_REGISTRATION or FAILED_REGISTRATION before).
    status: str = "READY"


class Registry:
    """A few read-only calls of MLflow's registry and artifact REST API."""

    def __init__(self, tracking_uri: str, timeout_s: float = 10.0) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self._http = httpx.Client(base_url=self.tracking_uri, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self, name: str, alias: str) -> AliasedVersion | None:
        """The version of `name` that carries `alias` (`latest`: the newest), or None."""
        if alias == LATEST:
            body = self._json(
                "/api/2.0/mlflow/model-versions/search",
                params={
                    "filter": f"name='{_quote(name)}'",
                    "order_by": "version_number DESC",
                    "max_results": 1,
                },
            )
            found = (body or {}).get("model_versions", [])
            return _aliased(found[0], alias) if found else None
        body = self._json(
            "/api/2.0/mlflow/registered-models/alias", params={"name": name, "alias": alias}
        )
        return None if body is None else _aliased(body.get("model_version"), alias)

    def download_uri(self, name: str, version: str) -> str:
        body = self._json(
            "/api/2.0/mlflow/model-versions/get-download-uri",
            params={"name": name, "version": version},
        )
        if body is None or not isinstance(body.get("artifact_uri"), str):
            raise RegistryError(f"{name} version {version} has no artifact location")
        return str(body["artifact_uri"])

    def artifact(self, artifact_uri: str, path: str) -> bytes:
        """One file below `artifact_uri` (an `mlflow-artifacts:` URI), through the proxy."""
        scheme, _, rest = artifact_uri.partition(":")
        if scheme != "mlflow-artifacts":
            raise RegistryError(
                f"artifacts at {artifact_uri!r} are not served by the tracking server; "
                "run `mlflow server` with artifact proxying (its default)"
            )
        # mlflow-artifacts:/1/models/... or mlflow-artifacts://host:port/1/models/...
        location = rest.removeprefix("//").partition("/")[2] if rest.startswith("//") else rest
        answer = self._get(f"/api/2.0/mlflow-artifacts/artifacts/{location.strip('/')}/{path}")
        if answer is None:
            raise RegistryError(f"{artifact_uri}/{path} does not exist")
        return answer.content

    def _json(self, url: str, params: dict[str, Any]) -> dict[str, Any] | None:
        answer = self._get(url, params)
        if answer is None:
            return None
        try:
            body = answer.json()
        except ValueError as e:
            raise RegistryError(f"MLflow at {self.tracking_uri} sent non-JSON for {url}") from e
        if not isinstance(body, dict):
            raise RegistryError(f"MLflow at {self.tracking_uri} sent {body!r} for {url}")
        return body

    def _get(self, url: str, params: dict[str, Any] | None = None) -> httpx.Response | None:
        """The answer, or None for "no such thing"; RegistryError for everything else."""
        try:
            answer = self._http.get(url, params=params)
        except httpx.HTTPError as e:
            raise RegistryError(f"MLflow at {self.tracking_uri} is unreachable: {e}") from e
        if answer.status_code == httpx.codes.NOT_FOUND or _alias_not_found(answer):
            return None
        if answer.is_error:
            raise RegistryError(
                f"MLflow at {self.tracking_uri} answered {answer.status_code} to "
                f"{url}: {answer.text[:200]}"
            )
        return answer


def version_by_alias(
    tracking_uri: str, name: str, alias: str, timeout_s: float = 10.0
) -> AliasedVersion | None:
    """One look-up with a short-lived client (CLIs and tests)."""
    with Registry(tracking_uri, timeout_s) as registry:
        return registry.version(name, alias)


def _aliased(mv: Any, alias: str) -> AliasedVersion:
    if not isinstance(mv, dict) or "name" not in mv or "version" not in mv:
        raise RegistryError(f"unexpected model version in MLflow's answer: {mv!r}")
    return AliasedVersion(
        name=str(mv["name"]),
        version=str(mv["version"]),
        alias=alias,
        run_id=str(mv.get("run_id", "")),
        tags={t["key"]: t["value"] for t in mv.get("tags", [])},
        status=str(mv.get("status", "READY")),
    )


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace("'", "\\'")


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
