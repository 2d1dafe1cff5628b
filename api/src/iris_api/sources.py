"""Where the served model comes from: the MLflow registry (the version an alias names), or a
folder of ONNX files (the newest version in it). `ModelFollower` asks its source the same two
things either way: which version is wanted now (`wanted`), and that version's ONNX bytes
(`fetch`); what happens next (check, swap, keep serving on failure) is the follower's.

The folder is a model repository as Triton and KServe lay one out: `<folder>/<version>/model.onnx`,
the version a whole number, the highest one served; `<folder>/<version>/tags.json` may give the
version's tags (`{"test_accuracy": "0.9667"}`). It serves the API without MLflow (an ONNX
export checked into an image, an air-gapped site), and the tests: a model built in the test's
process, no server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import yaml

from iris_api.model import ModelError
from iris_core.registry import AliasedVersion, Registry, RegistryError

#: A folder source's model file inside each version's folder.
MODEL_FILE = "model.onnx"
TAGS_FILE = "tags.json"
#: The alias a folder source's versions carry: the newest one is served.
FOLDER_ALIAS = "newest"


class SourceError(RegistryError):
    """The source cannot say which version is wanted, or cannot give its file (a folder that
    cannot be read; the registry's own failures are RegistryError)."""


class ModelSource(Protocol):
    """What `ModelFollower` needs of a model's origin. `wanted` and `fetch` block (the
    follower calls them off the event loop)."""

    @property
    def description(self) -> str:
        """What is followed, for messages and the model configuration (`models:/M@alias`)."""

    @property
    def missing(self) -> str:
        """Why nothing can be served while `wanted` finds nothing."""

    def wanted(self) -> AliasedVersion | None:
        """The version to serve now; None when there is none (no such alias, empty folder)."""

    def fetch(self, version: AliasedVersion) -> bytes:
        """The ONNX file of `version`; RegistryError (SourceError) when it cannot be had,
        ModelError when the version has none."""

    def close(self) -> None: ...


class RegistrySource:
    """The ONNX model version an MLflow registry alias names (`latest`: the newest version),
    its file read through the tracking server's artifact proxy."""

    def __init__(self, tracking_uri: str, name: str, alias: str, timeout_s: float) -> None:
        self.name, self.alias = name, alias
        self._registry = Registry(tracking_uri, timeout_s)

    @property
    def description(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    @property
    def missing(self) -> str:
        return f"{self.description} is not in the registry at {self._registry.tracking_uri}"

    def wanted(self) -> AliasedVersion | None:
        return self._registry.version(self.name, self.alias)

    def fetch(self, version: AliasedVersion) -> bytes:
        """The file its MLmodel names (the ONNX flavour's `data`)."""
        root = self._registry.download_uri(version.name, version.version)
        try:
            mlmodel = yaml.safe_load(self._registry.artifact(root, "MLmodel"))
            data = mlmodel["flavors"]["onnx"]["data"]
        except (yaml.YAMLError, KeyError, TypeError) as e:
            raise ModelError(f"{version.name} version {version.version} has no ONNX flavour") from e
        return self._registry.artifact(root, str(data))

    def close(self) -> None:
        self._registry.close()


class FolderSource:
    """The newest version of a model repository folder (`<folder>/<version>/model.onnx`)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name

    @property
    def description(self) -> str:
        return f"{self.folder}/<newest version>/{MODEL_FILE}"

    @property
    def missing(self) -> str:
        return f"no <version>/{MODEL_FILE} in {self.folder} (versions are whole numbers)"

    def wanted(self) -> AliasedVersion | None:
        try:
            versions = [
                int(entry.name)
                for entry in self.folder.iterdir()
                if entry.name.isdigit() and (entry / MODEL_FILE).is_file()
            ]
        except OSError as e:
            raise SourceError(f"cannot read the model folder {self.folder}: {e}") from e
        if not versions:
            return None
        newest = str(max(versions))
        return AliasedVersion(
            name=self.name,
            version=newest,
            alias=FOLDER_ALIAS,
            run_id="",
            tags=self._tags(self.folder / newest),
        )

    def fetch(self, version: AliasedVersion) -> bytes:
        path = self.folder / version.version / MODEL_FILE
        try:
            return path.read_bytes()
        except OSError as e:
            raise SourceError(f"cannot read {path}: {e}") from e

    def close(self) -> None:
        pass

    @staticmethod
    def _tags(folder: Path) -> dict[str, str]:
        path = folder / TAGS_FILE
        if not path.is_file():
            return {}
        try:
            tags = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SourceError(f"{path} is not a JSON object of tags: {e}") from e
        if not isinstance(tags, dict):
            raise SourceError(f"{path} is not a JSON object of tags")
        return {str(k): str(v) for k, v in tags.items()}
