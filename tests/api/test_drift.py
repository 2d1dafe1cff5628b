"""Drift statistics without servers: reference bins, PSI, the API's sliding window."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from iris_api.drift import INPUT_BUCKETS, DriftMonitor
from iris_api.settings import ApiSettings
from iris_core import FEATURES, MEASUREMENT_MAX_CM, drift

RNG = np.random.default_rng(3)
TRAIN = RNG.normal(5, 1, (400, 4)).round(1).astype(np.float32)


def reference() -> dict[str, drift.FeatureReference]:
    return drift.reference_from_columns(
        {name: TRAIN[:, i].tolist() for i, name in enumerate(FEATURES)}
    )


def test_reference_bins_hold_the_training_rows_and_round_trip() -> None:
    ref = reference()
    for i, name in enumerate(FEATURES):
        r = ref[name]
        assert sum(r.counts) == len(TRAIN)
        assert 5 <= len(r.counts) <= 10
        assert all(c > 0 for c in r.counts)  # decile bins: none empty
        assert [r.bin(v) for v in TRAIN[:, i].tolist()].count(0) == r.counts[0]
    assert drift.loads(drift.dumps(ref)) == ref


@pytest.mark.parametrize(
    "text",
    ["[]", "{}", '{"sepal_length": {"edges": [1], "counts": [1]}}', "not json"],
)
def test_malformed_reference_statistics_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"reference|counts"):
        drift.loads(text)


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    assert drift.psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0, abs=1e-12)
    assert drift.psi([20, 40, 60], [10, 20, 30]) == pytest.approx(0, abs=1e-3)
    small = drift.psi([12, 20, 28], [10, 20, 30])
    large = drift.psi([0, 0, 60], [10, 20, 30])
    assert 0 < small < 0.1
    assert large > 0.25
    assert math.isfinite(drift.psi([0, 0, 0], [10, 0, 30]))  # empty bins stay finite


def test_the_window_keeps_the_last_rows_and_scores_each_feature() -> None:
    monitor = DriftMonitor(window=100, min_rows=50)
    monitor.set_reference(reference())
    for row in TRAIN[:49].tolist():
        monitor.observe(row)
    assert monitor.scores() == {}  # fewer than min_rows
    for row in TRAIN[49:150].tolist():
        monitor.observe(row)
    calm = monitor.scores()
    assert set(calm) == set(FEATURES)
    assert max(calm.values()) < 0.25
    shifted = TRAIN[:100].copy()
    shifted[:, 2] += 3
    for row in shifted.tolist():
        monitor.observe(row)
    moved = monitor.scores()
    assert moved["petal_length"] > 1
    assert all(v < 0.25 for k, v in moved.items() if k != "petal_length")
    # only the last 100 rows count: calm rows again bring the score back down
    for row in TRAIN[200:300].tolist():
        monitor.observe(row)
    assert monitor.scores()["petal_length"] < 0.25


def test_a_new_reference_rebins_the_window_and_none_turns_scores_off() -> None:
    monitor = DriftMonitor(window=100, min_rows=10)
    for row in TRAIN[:20].tolist():
        monitor.observe(row)
    assert monitor.scores() == {}  # no reference (a model without one): histograms only
    monitor.set_reference(reference())
    for row in TRAIN[:20].tolist():
        monitor.observe(row)
    first = monitor.scores()
    # Another model, other bins (from other training rows): the same 20 rows, re-binned.
    other = drift.reference_from_columns(
        {name: (TRAIN[:, i] + 1).tolist() for i, name in enumerate(FEATURES)}
    )
    monitor.set_reference(other)
    moved = monitor.scores()
    assert set(moved) == set(FEATURES)
    assert all(moved[k] > first[k] for k in FEATURES)  # 1 cm below the new reference
    monitor.set_reference(None)
    assert monitor.scores() == {}


def test_histograms_count_every_row_in_fixed_buckets() -> None:
    registry = CollectorRegistry()
    monitor = DriftMonitor(window=10, min_rows=5)
    registry.register(monitor)
    for row in ([0.5, 3.0, 30.0, 0.2], [1.0, 3.0, 7.9, 0.2]):
        monitor.observe(row)
    text = generate_latest(registry).decode()
    assert 'iris_input_cm_bucket{feature="sepal_length",le="0.5"} 1.0' in text
    assert 'iris_input_cm_bucket{feature="sepal_length",le="1"} 2.0' in text
    assert 'iris_input_cm_bucket{feature="petal_length",le="8"} 1.0' in text
    assert 'iris_input_cm_bucket{feature="petal_length",le="+Inf"} 2.0' in text
    assert 'iris_input_cm_count{feature="petal_width"} 2.0' in text
    assert 'iris_input_cm_sum{feature="petal_length"} 37.9' in text
    assert "iris_input_drift_window_rows 0.0" in text  # no reference: no window
    # Every bucket is exported, +Inf once; bisection needs them strictly increasing, and the
    # largest measurement the API accepts still falls in a finite one.
    bounds = re.findall(r'iris_input_cm_bucket\{feature="sepal_width",le="([^"]+)"\}', text)
    assert bounds == [*(_le(b) for b in INPUT_BUCKETS), "+Inf"]
    assert all(a < b for a, b in itertools.pairwise(INPUT_BUCKETS))
    assert INPUT_BUCKETS[-1] >= MEASUREMENT_MAX_CM


def _le(bound: float) -> str:
    """A bucket bound as the Prometheus client writes it (1.0 -> "1", 0.5 -> "0.5")."""
    return f"{bound:g}"


def test_the_minimum_rows_must_fit_in_the_window() -> None:
    with pytest.raises(ValidationError, match="at most IRIS_API_DRIFT_WINDOW"):
        ApiSettings(drift_window=50, drift_min_rows=60)
    assert ApiSettings(drift_window=50, drift_min_rows=50).drift_min_rows == 50
