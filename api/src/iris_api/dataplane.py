"""The data plane: every inference operation of the API, for every entry to it. `/predict`, the
Open Inference Protocol's REST endpoints (through the ASGI fast path or FastAPI's routes) and
its gRPC service call the same methods, which take decoded inputs, return plain data and raise
the errors of `iris_api.errors` (404 no such model or version, 503 none loaded, 422, 409):
nothing here knows of a request, a header or a status line. Model name and version are
checked here and only here (`served`).

The model is the follower's (`iris_api.follower`); predictions run and are recorded by
`iris_api.predicting.Predictions`; the protocol's request and result types are
`iris_api.oip`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version as package_version
from typing import Any, NoReturn

import numpy as np

from iris_api.bodies import FLOAT32_ZERO, check_rows
from iris_api.errors import InvalidInput, NotFound, NotReady, Refused
from iris_api.follower import ModelFollower
from iris_api.model import Predictor
from iris_api.oip import EXTENSIONS, InferRequest, InferResult
from iris_api.predicting import Predictions, VersionStats
from iris_api.schemas import PredictInput
from iris_core import CLASS_NAMES, FEATURES, N_FEATURES

PLATFORM = "onnxruntime_onnx"
INPUTS = [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}]
OUTPUTS = [
    {"name": "label", "datatype": "INT64", "shape": [-1]},
    {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(CLASS_NAMES)]},
]


class DataPlane:
    """One per app: the model served as `name`, its predictions and their statistics."""

    def __init__(
        self, predictions: Predictions, follower: ModelFollower, name: str, batch_limit: int
    ) -> None:
        self.predictions = predictions
        self.follower = follower
        self.name = name
        self.batch_limit = batch_limit
        self.server_version = package_version("iris-api")

    # --- the model ------------------------------------------------------------------------

    def served(self, name: str | None = None, version: str | None = None) -> Predictor:
        """The served model, as `name` (default: this server's) and `version` (default: the
        one served): 404 for another name or version, 503 while none is loaded."""
        self.check_name(name)
        return self._version(self.predictions.model(), version)

    def check_name(self, name: str | None) -> None:
        if name is not None and name != self.name:
            raise NotFound(f"no model {name!r} here: this server serves {self.name!r}")

    def _version(self, model: Predictor, version: str | None) -> Predictor:
        if version is not None and version != model.version.version:
            raise NotFound(
                f"model {self.name!r} has no version {version!r} here: version "
                f"{model.version.version} is served"
            )
        return model

    def _not_ready(self, **fields: Any) -> NotReady:
        follower = self.follower
        fields |= {"ready": False, "reason": follower.reason}
        return NotReady(follower.reason, follower.settings.poll_interval_s, fields)

    def model_info(self) -> dict[str, Any]:
        """`GET /model`: name, version, alias, run, test accuracy, when it was loaded."""
        model = self.served()
        v = model.version
        return {
            "name": v.name,
            "version": v.version,
            "alias": v.alias,
            "run_id": v.run_id,
            "test_accuracy": model.test_accuracy,
            "loaded_at": model.loaded_at.isoformat().replace("+00:00", "Z"),
        }

    # --- /predict --------------------------------------------------------------------------

    def predict(self, flower: PredictInput) -> dict[str, Any]:
        """`PredictOutput` for one flower."""
        row = flower.row()
        x = np.array([row], dtype=np.float32)
        if min(row) <= FLOAT32_ZERO:  # positive as float64 (the schema), 0 as float32
            check_rows(x, lambda i: ("body", FEATURES[i]))
        model = self.served()
        outputs = self.predictions.predict(model, x)
        rounded = [round(p, 6) for p in outputs.probabilities[0].tolist()]
        answer = _prediction(int(outputs.labels[0]), rounded)
        answer["model_version"] = model.version.version
        return answer

    def predict_batch(self, flowers: list[PredictInput]) -> dict[str, Any]:
        """`BatchOutput` for several flowers, in their order (numpy rounds them at once)."""
        x = check_rows(
            np.array([f.row() for f in flowers], dtype=np.float32),
            lambda i: ("body", "instances", i // N_FEATURES, FEATURES[i % N_FEATURES]),
        )
        model = self.served()
        outputs = self.predictions.predict(model, x)
        probabilities = np.round(outputs.probabilities.astype(np.float64), 6).tolist()
        return {
            "predictions": [
                _prediction(label, row)
                for label, row in zip(outputs.labels.tolist(), probabilities, strict=True)
            ],
            "model_version": model.version.version,
        }

    # --- Open Inference Protocol: health and metadata -------------------------------------

    def server_live(self) -> dict[str, Any]:
        return {"live": True}

    def server_ready(self) -> dict[str, Any]:
        if self.follower.current is None:
            raise self._not_ready()
        return {"ready": True}

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "iris-api", "version": self.server_version, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.served(name, version)
        return {
            "name": self.name,
            "versions": [model.version.version],
            "platform": PLATFORM,
            "inputs": INPUTS,
            "outputs": OUTPUTS,
        }

    def model_ready(self, name: str, version: str | None = None) -> dict[str, Any]:
        self.check_name(name)
        model = self.follower.current
        if model is None:
            raise self._not_ready(name=name)
        self._version(model, version)
        return {"name": name, "ready": True}

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The model configuration extension, in Triton's shape (what standard tooling reads)."""
        v = self.served(name, version).version
        return {
            "name": self.name,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "version_policy": {"specific": {"versions": [v.version]}},
            "max_batch_size": self.batch_limit,
            "input": [
                {"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NONE",
                 "dims": [N_FEATURES]},
            ],
            "output": [
                {"name": "label", "data_type": "TYPE_INT64", "dims": [1],
                 "reshape": {"shape": []}},
                {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [len(CLASS_NAMES)]},
            ],
            "parameters": {
                "registry_model": {"string_value": self.follower.wanted},
                "registered_name": {"string_value": v.name},
                "run_id": {"string_value": v.run_id},
                "class_names": {"string_value": ",".join(CLASS_NAMES)},
            },
        }  # fmt: skip

    def model_stats(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """The statistics extension: per version that answered in this process (and the one
        served), all of them or one. A version that is served no more keeps its figures; one
        never seen here is a 404."""
        self.check_name(name)
        versions = dict(self.predictions.stats.versions)
        model = self.follower.current
        if model is not None:
            versions.setdefault(model.version.version, VersionStats())
        if version is not None:
            if version not in versions:
                raise NotFound(
                    f"model {self.name!r} has no statistics for version {version!r}: "
                    f"versions here are {sorted(versions, key=_order) or 'none'}"
                )
            versions = {version: versions[version]}
        return {
            "model_stats": [
                _version_stats(self.name, v, s)
                for v, s in sorted(versions.items(), key=lambda item: _order(item[0]))
            ]
        }

    # --- Open Inference Protocol: the model repository extension --------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """The one model: READY, or UNAVAILABLE with the reason (`ready_only`: if ready)."""
        model = self.follower.current
        if model is None:
            entry = {"name": self.name, "state": "UNAVAILABLE", "reason": self.follower.reason}
            return [] if ready_only else [entry]
        version = model.version.version
        return [{"name": self.name, "version": version, "state": "READY", "reason": ""}]

    async def repository_load(self, name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
        """Asks the model's source now which version it names, and loads it if it is new
        (rather than at the next poll). Given a configuration or files: 409, the source
        decides what is served."""
        self.check_name(name)
        if parameters:
            raise Refused(
                409,
                f"{name!r} is loaded from {self.follower.wanted}: a configuration or files given "
                "with the request are not used; what that source names is served",
            )
        await self.follower.check_now()
        if self.follower.current is None:
            raise self._not_ready()
        return {}

    def repository_unload(self, name: str) -> NoReturn:
        """Refused (409): the served model follows its source and is replaced when the source
        moves on, never left without a model."""
        self.check_name(name)
        raise Refused(
            409,
            f"{name!r} follows {self.follower.wanted} and is not unloaded on request: what that "
            "source names is served (move the registry alias, or the folder's newest version)",
        )

    # --- Open Inference Protocol: infer ---------------------------------------------------

    def infer(
        self, name: str, version: str | None, decode: Callable[[], InferRequest]
    ) -> InferResult:
        """The model (`served`: 404, 503) first, then the request `decode` reads (its 422s
        counted against that version's statistics), then the prediction."""
        model = self.served(name, version)
        try:
            request = decode()
        except InvalidInput:
            self.predictions.stats.failed(model.version.version)
            raise
        outputs = self.predictions.predict(model, request.x)
        return InferResult(
            self.name,
            model.version.version,
            request.id,
            outputs.labels,
            outputs.probabilities,
            request.outputs,
        )


def _prediction(label: int, probabilities: list[float]) -> dict[str, Any]:
    """One `Prediction` as plain data for orjson (probabilities already rounded)."""
    return {
        "class_name": CLASS_NAMES[label],
        "class_index": label,
        "probabilities": dict(zip(CLASS_NAMES, probabilities, strict=True)),
    }


def _order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def _version_stats(name: str, version: str, s: VersionStats) -> dict[str, Any]:
    def duration(count: int, ns: int = 0) -> dict[str, int]:
        return {"count": count, "ns": ns}

    return {
        "name": name,
        "version": version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": duration(s.execution_count, s.success_ns),
            "fail": duration(s.fail_count),
            "queue": duration(0),  # no queue: one model call at a time on the event loop
            "compute_input": duration(0),
            "compute_infer": duration(s.execution_count, s.infer_ns),
            "compute_output": duration(0),
        },
        "batch_stats": [],
    }
