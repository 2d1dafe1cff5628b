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
from typing import Any

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
        #: The shadow metrics' children, per (champion, challenger) versions.
        self._pairs: dict[tuple[str, str], _PairRecorders] = {}

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
        shadow = self.follower.challenger
        if shadow is not None and shadow.version.version != model.version.version:
            self._shadow(model, shadow, x, labels)
        return outputs

    def _shadow(
        self, model: Predictor, shadow: Predictor, x: npt.NDArray[np.float32], labels: Any
    ) -> None:
        """The challenger on the same rows, recorded beside the champion's answer and never
        returned: whatever it does (an error included) stays here."""
        pair = (model.version.version, shadow.version.version)
        recorders = self._pairs.get(pair)
        if recorders is None:
            recorders = self._pairs[pair] = _PairRecorders(self.metrics, *pair)
        try:
            theirs = shadow.infer(x).labels
        except Exception:  # noqa: BLE001 (a challenger's failure must never reach a client)
            recorders.errors.inc()
            return
        recorders.record(labels, theirs)


class _PairRecorders:
    """The metric children of one served and shadow pair, looked up once."""

    def __init__(self, metrics: Metrics, champion: str, challenger: str) -> None:
        self.champion = [
            metrics.role_predictions.labels("served", champion, c) for c in CLASS_NAMES
        ]
        self.challenger = [
            metrics.role_predictions.labels("shadow", challenger, c) for c in CLASS_NAMES
        ]
        self.agreed = metrics.shadow_rows.labels(champion, challenger, "true")
        self.disagreed = metrics.shadow_rows.labels(champion, challenger, "false")
        self.errors = metrics.shadow_errors.labels(challenger)

    def record(self, ours: Any, theirs: Any) -> None:
        if len(ours) == 1:
            a, b = int(ours[0]), int(theirs[0])
            self.champion[a].inc()
            self.challenger[b].inc()
            (self.agreed if a == b else self.disagreed).inc()
            return
        for counts, children in (
            (np.bincount(ours, minlength=len(CLASS_NAMES)), self.champion),
            (np.bincount(theirs, minlength=len(CLASS_NAMES)), self.challenger),
        ):
            for child, n in zip(children, counts.tolist(), strict=True):
                if n:
                    child.inc(n)
        same = int(np.count_nonzero(ours == theirs))
        if same:
            self.agreed.inc(same)
        if same != len(ours):
            self.disagreed.inc(len(ours) - same)
