"""The one prediction path. The fast path, `/predict`, `/predict/batch` and the Open Inference
Protocol's infer all go through `Predictions.predict`, which runs the served model and records
what it answered (predictions by class, inference time, confidence, the input monitor). The
`Prediction` answers are shaped here too, so every entry answers alike.

A model call that is not a prediction (/suggest asking the model's opinion) calls
`Predictor.infer` and is not counted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from iris_api.errors import NotReady
from iris_api.follower import ModelFollower
from iris_api.metrics import Metrics
from iris_api.model import Outputs, Predictor
from iris_api.schemas import PredictInput
from iris_core import CLASS_NAMES


class Predictions:
    """One per app: the served model (the follower's) and the metrics its predictions feed.
    One object, so a prediction route takes one dependency (each costs FastAPI microseconds)."""

    def __init__(self, follower: ModelFollower, metrics: Metrics) -> None:
        self.follower = follower
        self.metrics = metrics

    def model(self) -> Predictor:
        """The served model, or 503 with the reason there is none yet."""
        model = self.follower.current
        if model is None:
            raise NotReady(self.follower.reason, self.follower.settings.poll_interval_s)
        return model

    def predict(self, model: Predictor, x: npt.NDArray[np.float32]) -> Outputs:
        """`model`'s outputs for rows `x` (float32, [N, 4]), each row counted by its predicted
        class, its confidence and its inputs (histograms, drift window), the call timed."""
        m = self.metrics
        start = time.perf_counter()
        outputs = model.infer(x)
        m.inference.observe(time.perf_counter() - start)
        labels = outputs.labels
        monitor = m.drift
        if len(labels) == 1:  # the common case, without numpy's per-call overhead
            label = int(labels[0])
            m.predicted_by_index[label].inc()
            m.confidence.observe(float(outputs.probabilities[0, label]))
            if monitor is not None:
                monitor.observe(x[0].tolist())
        else:
            counts = np.bincount(labels, minlength=len(CLASS_NAMES)).tolist()
            for child, n in zip(m.predicted_by_index, counts, strict=True):
                if n:
                    child.inc(n)
            for p in outputs.probabilities.max(axis=1).tolist():
                m.confidence.observe(p)
            if monitor is not None:
                for row in x.tolist():
                    monitor.observe(row)
        return outputs

    def one(self, flower: PredictInput) -> dict[str, Any]:
        """`PredictOutput` for one flower (no numpy calls beyond the model's, for one row)."""
        model = self.model()
        outputs = self.predict(model, np.array([flower.row()], dtype=np.float32))
        rounded = [round(p, 6) for p in outputs.probabilities[0].tolist()]
        answer = _prediction(int(outputs.labels[0]), rounded)
        answer["model_version"] = model.version.version
        return answer

    def batch(self, flowers: list[PredictInput]) -> dict[str, Any]:
        """`BatchOutput` for several flowers, in their order (numpy rounds them at once)."""
        model = self.model()
        outputs = self.predict(model, np.array([f.row() for f in flowers], dtype=np.float32))
        probabilities = np.round(outputs.probabilities.astype(np.float64), 6).tolist()
        return {
            "predictions": [
                _prediction(label, row)
                for label, row in zip(outputs.labels.tolist(), probabilities, strict=True)
            ],
            "model_version": model.version.version,
        }


def _prediction(label: int, probabilities: list[float]) -> dict[str, Any]:
    """One `Prediction` as plain data for orjson (probabilities already rounded)."""
    return {
        "class_name": CLASS_NAMES[label],
        "class_index": label,
        "probabilities": dict(zip(CLASS_NAMES, probabilities, strict=True)),
    }
