"""Input drift and input histograms, computed from the requests this process answered.

Each predicted row is binned per feature twice: on the served model's reference bins (its
training deciles, from the ONNX metadata: `iris_core.drift`) into a sliding window of the last
IRIS_API_DRIFT_WINDOW rows, and on fixed cm buckets into a cumulative histogram. Per request
that is a few bisections and additions in plain Python; the PSI itself is computed only when
Prometheus scrapes (`collect`). A new model brings new reference bins: the window is re-binned.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Sequence

from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from iris_core import FEATURES
from iris_core.drift import FeatureReference, psi

#: Fixed buckets (cm, upper bounds) of the input histograms: every 0.5 cm to 8 cm (Fisher's
#: largest measurement is 7.9 cm), then 10, 15 and 30 (the largest accepted).
INPUT_BUCKETS = (*(0.5 * i for i in range(1, 17)), 10.0, 15.0, 30.0)


class DriftMonitor(Collector):
    def __init__(self, window: int, min_rows: int) -> None:
        self.window = window
        self.min_rows = min_rows
        self.reference: dict[str, FeatureReference] | None = None
        self._refs: list[FeatureReference] = []
        self._rows: deque[tuple[Sequence[float], tuple[int, ...]]] = deque()
        self._counts: list[list[int]] = []
        self._buckets = [[0] * (len(INPUT_BUCKETS) + 1) for _ in FEATURES]
        self._sums = [0.0] * len(FEATURES)

    def set_reference(self, reference: dict[str, FeatureReference] | None) -> None:
        """The served model's reference bins (None: the model has none, no drift score)."""
        if reference == self.reference:
            return
        self.reference = reference
        self._refs = [reference[name] for name in FEATURES] if reference else []
        self._counts = [[0] * len(r.counts) for r in self._refs]
        rows, self._rows = self._rows, deque()
        if self._refs:  # the same recent rows, on the new bins
            for row, _ in rows:
                self._window(row)

    def observe(self, row: Sequence[float]) -> None:
        """One input row (the 4 features in order)."""
        buckets = self._buckets
        sums = self._sums
        for i, value in enumerate(row):
            buckets[i][bisect_left(INPUT_BUCKETS, value)] += 1
            sums[i] += value
        if self._refs:
            self._window(row)

    def _window(self, row: Sequence[float]) -> None:
        bins = tuple(ref.bin(value) for ref, value in zip(self._refs, row, strict=True))
        counts = self._counts
        if len(self._rows) >= self.window:
            _, old = self._rows.popleft()
            for i, b in enumerate(old):
                counts[i][b] -= 1
        self._rows.append((row, bins))
        for i, b in enumerate(bins):
            counts[i][b] += 1

    def scores(self) -> dict[str, float]:
        """PSI per feature over the window; empty until it holds `min_rows` rows."""
        if not self._refs or len(self._rows) < self.min_rows:
            return {}
        return {
            name: psi(counts, ref.counts)
            for name, counts, ref in zip(FEATURES, self._counts, self._refs, strict=True)
        }

    def collect(self) -> Iterator[Metric]:
        scores = GaugeMetricFamily(
            "iris_input_drift_psi",
            "Population Stability Index of recent inputs against the model's training data",
            labels=["feature"],
        )
        for name, value in self.scores().items():
            scores.add_metric([name], value)
        yield scores
        yield GaugeMetricFamily(
            "iris_input_drift_window_rows",
            "Rows in the drift window (scores appear once it holds IRIS_API_DRIFT_MIN_ROWS)",
            value=len(self._rows),
        )
        histogram = HistogramMetricFamily(
            "iris_input_cm", "Input measurements (cm), fixed buckets", labels=["feature"]
        )
        for i, name in enumerate(FEATURES):
            cumulative, total = [], 0
            for bound, n in zip((*INPUT_BUCKETS, float("inf")), self._buckets[i], strict=True):
                total += n
                cumulative.append((_le(bound), total))
            histogram.add_metric([name], cumulative, self._sums[i])
        yield histogram


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else f"{bound:g}"
