"""How the API reads a flow run's state from Prefect's answer: whether it has started, and how
long it has waited to (the start timeout's clock), on Prefect's clock, not this machine's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from iris_api.prefect import RunState, _server_now

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def run(
    kind: str, name: str, state_at: datetime, expected: datetime | None = None
) -> dict[str, Any]:
    return {
        "id": "r1",
        "name": "brave-otter",
        "state": {"type": kind, "name": name, "timestamp": state_at.isoformat()},
        "expected_start_time": (expected or state_at).isoformat(),
    }


def test_a_scheduled_run_waits_from_its_start_time_not_from_its_creation() -> None:
    created = NOW - timedelta(minutes=10)
    due = NOW - timedelta(seconds=30)  # scheduled to start 9.5 minutes after it was made
    state = RunState.of(run("SCHEDULED", "Late", created, due), NOW)
    assert (state.started, state.waiting_s, state.state_name) == (False, 30.0, "Late")
    future = RunState.of(run("SCHEDULED", "Scheduled", created, NOW + timedelta(hours=1)), NOW)
    assert future.waiting_s == 0.0


def test_a_pending_run_waits_from_its_claim() -> None:
    claimed = NOW - timedelta(seconds=75)
    state = RunState.of(run("PENDING", "Submitting", claimed, NOW - timedelta(hours=1)), NOW)
    assert (state.started, state.waiting_s) == (False, 75.0)
    assert state.stats(start_timeout_s=60) == {
        "id": "r1",
        "name": "brave-otter",
        "state": "PENDING",
        "state_name": "Submitting",
        "waiting_s": 75.0,
        "stuck": True,
    }
    assert state.stats(start_timeout_s=90)["stuck"] is False


@pytest.mark.parametrize("kind", ["RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"])
def test_a_run_past_pending_has_started_and_waits_for_nothing(kind: str) -> None:
    state = RunState.of(run(kind, kind.title(), NOW - timedelta(hours=2)), NOW)
    assert (state.started, state.waiting_s) == (True, 0.0)


def test_a_state_stamped_after_the_servers_second_is_not_negative() -> None:
    """Prefect's Date header has whole seconds: a state from later in that second is 0 s old."""
    state = RunState.of(run("PENDING", "Pending", NOW + timedelta(milliseconds=400)), NOW)
    assert state.waiting_s == 0.0


def test_prefects_clock_comes_from_its_date_header() -> None:
    answered = httpx.Response(200, headers={"date": "Fri, 04 Dec 2026 12:00:00 GMT"})
    assert _server_now(answered) == NOW
    for headers in ({}, {"date": "not a date"}):
        before = datetime.now(UTC)
        assert before <= _server_now(httpx.Response(200, headers=headers)) <= datetime.now(UTC)
