"""The one prediction path: every prediction of the data plane (`/predict`, batches, the Open
Inference Protocol's infer, whatever the entry) goes through `Predictions.predict`, which runs
the served model and records what it answered (predictions by class, inference time,
confidence, the input monitor, the statistics of its version).

A model call that is not a prediction (/suggest asking the model's opinion) calls
`Predictor.infer` and is not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from iris_api.errors import NotReady
from iris_api.follower import ModelFollower
from iris_api.metrics import Metrics
from iris_api.model import Outputs, Predictor
from iris_core import CLASS_NAMES


@dataclass(slots=True)
class VersionStats:
    """What one model version did in this process (the protocol's statistics extension)."""

    #: Rows predicted.
    inference_count: int = 0
    #: Model calls: a request of several rows is one.
    execution_count: int = 0
    #: Time in `Predictions.predict` (model and recording), and in onnxruntime alone.
    success_ns: int = 0
    infer_ns: int = 0
    #: Infer requests for this version refused for bad input.
    fail_count: int = 0
    #: When it last predicted, ms since the epoch (0: never).
    last_inference_ms: int = 0


class Statistics:
    """Per model version, since the process started: plain counters, no locks (the event loop
    runs one prediction at a time)."""

    def __init__(self) -> None:
        self.versions: dict[str, VersionStats] = {}

    def of(self, version: str) -> VersionStats:
        stats = self.versions.get(version)
        if stats is None:
            stats = self.versions[version] = VersionStats()
        return stats

    def failed(self, version: str) -> None:
        self.of(version).fail_count += 1


class Predictions:
    """One per app: the served model (the follower's) and the metrics its predictions feed.
    One object, so a prediction route takes one dependency (each costs FastAPI microseconds)."""

    def __init__(self, follower: ModelFollower, metrics: Metrics) -> None:
        self.follower = follower
        self.metrics = metrics
        self.stats = Statistics()

    def model(self) -> Predictor:
        """The served model, or 503 with the reason there is none yet."""
        model = self.follower.current
        if model is None:
            raise NotReady(self.follower.reason, self.follower.settings.poll_interval_s)
        return model

    def predict(self, model: Predictor, x: npt.NDArray[np.float32]) -> Outputs:
        """`model`'s outputs for rows `x` (float32, [N, 4]), each row counted by its predicted
        class, its confidence and its inputs (histograms, drift window), the call timed and
        counted for the version's statistics."""
        m = self.metrics
        start = time.perf_counter_ns()
        outputs = model.infer(x)
        infer_ns = time.perf_counter_ns() - start
        m.inference.observe(infer_ns * 1e-9)
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
        stats = self.stats.of(model.version.version)
        stats.inference_count += len(labels)
        stats.execution_count += 1
        stats.infer_ns += infer_ns
        stats.success_ns += time.perf_counter_ns() - start
        stats.last_inference_ms = time.time_ns() // 1_000_000
        return outputs
