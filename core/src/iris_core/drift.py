"""Input drift: reference statistics saved with a model, and the Population Stability Index.

Training bins each feature of its training rows at the deciles (fewer edges where values tie)
and stores, per feature, the inner bin edges and the row count of each bin in the ONNX model's
metadata (`reference`), so a server needs no data files. A server bins its recent inputs the
same way and compares:

    PSI = sum over bins of (a - e) * ln(a / e)

with `a` and `e` the shares of the recent and the reference rows in each bin, each smoothed by
half a row per bin (an empty bin is not infinitely surprising). Why PSI and not the two-sample
Kolmogorov-Smirnov statistic: both fit binned counts, but PSI weighs every bin (KS only the
largest gap of the two CDFs, so a shift confined to the tails barely moves it), it is the
metric model-monitoring teams already read, with the usual reading 0.1 = moderate and
0.25 = large shift, and on a window of counts it costs a handful of additions per request.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from iris_core.schema import FEATURES

#: The ONNX metadata key holding the reference statistics (JSON).
METADATA_KEY = "reference"


@dataclass(frozen=True, slots=True)
class FeatureReference:
    edges: tuple[
        float, ...
    ]  # inner bin edges, increasing; bin i = values in [edges[i-1], edges[i])
    counts: tuple[int, ...]  # reference rows per bin (len(edges) + 1)

    def bin(self, value: float) -> int:
        return bisect_right(self.edges, value)


def reference_from_columns(
    columns: Mapping[str, Sequence[float]], bins: int = 10
) -> dict[str, FeatureReference]:
    """Decile bins (ties merged) and their counts, per feature, from training columns."""
    found = {}
    for name, values in columns.items():
        ordered = sorted(values)
        n = len(ordered)
        edges = sorted({ordered[min(n - 1, (n * i) // bins)] for i in range(1, bins)})
        edges = [e for e in edges if e > ordered[0]]  # a first edge at the minimum: empty bin 0
        counts = [0] * (len(edges) + 1)
        for v in ordered:
            counts[bisect_right(edges, v)] += 1
        found[name] = FeatureReference(tuple(edges), tuple(counts))
    return found


def dumps(reference: Mapping[str, FeatureReference]) -> str:
    return json.dumps(
        {name: {"edges": list(r.edges), "counts": list(r.counts)} for name, r in reference.items()}
    )


def loads(text: str) -> dict[str, FeatureReference]:
    """Parse `dumps`' output; ValueError if it is not reference statistics for our features."""
    try:
        data = json.loads(text)
        found = {
            name: FeatureReference(
                tuple(float(e) for e in data[name]["edges"]),
                tuple(int(c) for c in data[name]["counts"]),
            )
            for name in FEATURES
        }
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not reference statistics: {e}") from e
    for name, r in found.items():
        if len(r.counts) != len(r.edges) + 1 or list(r.edges) != sorted(set(r.edges)):
            raise ValueError(f"{name}: edges and counts do not match")
        if sum(r.counts) <= 0:
            raise ValueError(f"{name}: no reference rows")
    return found


def psi(actual: Iterable[int], expected: Iterable[int]) -> float:
    """Population Stability Index of bin counts `actual` against `expected` (same bins)."""
    a, e = list(actual), list(expected)
    na, ne, k = sum(a), sum(e), len(a)
    total = 0.0
    for ca, ce in zip(a, e, strict=True):
        pa = (ca + 0.5) / (na + 0.5 * k)
        pe = (ce + 0.5) / (ne + 0.5 * k)
        total += (pa - pe) * math.log(pa / pe)
    return total
