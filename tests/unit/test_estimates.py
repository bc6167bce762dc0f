"""The pure estimate functions: queue state, ETA, Retry-After."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.config import LimitSettings
from backend.limits.estimates import (
    MAX_RETRY_AFTER_S,
    clamp_retry_after,
    eta_s,
    queue_full_retry_after_s,
    queue_state,
    user_job_ends_in_s,
)
from backend.models import QueueState


@pytest.mark.parametrize(
    ("inflight", "state"),
    [(0, "ok"), (399, "ok"), (400, "warning"), (499, "warning"), (500, "critical"),
     (501, "critical")],
)  # fmt: skip
def test_queue_state_at_the_default_thresholds(inflight: int, state: str) -> None:
    assert queue_state(inflight, LimitSettings()) is QueueState(state)


def test_queue_state_with_configured_thresholds() -> None:
    limits = LimitSettings(queue_capacity=10, warning_at=8)
    assert [queue_state(n, limits).value for n in (7, 8, 9, 10)] == [
        "ok", "warning", "warning", "critical"
    ]  # fmt: skip
    # A warning threshold above the capacity never shows: full is critical.
    assert queue_state(10, LimitSettings(queue_capacity=10, warning_at=400)) is QueueState.CRITICAL


@pytest.mark.parametrize(
    ("position", "active", "slots", "expected"),
    [
        (1, 0, 2, 0.0),  # a free slot takes it at once
        (2, 0, 2, 0.0),
        (3, 0, 2, 10.0),  # one round behind the two that start now
        (4, 0, 2, 10.0),
        (5, 0, 2, 20.0),
        (1, 2, 2, 10.0),  # all slots busy: the first waits one run
        (3, 2, 2, 20.0),
        (1, 1, 2, 0.0),
        (1, 0, 0, 10.0),  # no live worker: as if one slot, rather than no answer
        (3, 0, 0, 30.0),
        (1, 5, 2, 10.0),  # more active than slots (a worker just left): still one round
    ],
)
def test_eta(position: int, active: int, slots: int, expected: float) -> None:
    assert eta_s(position, active, slots, 10.0) == expected


@given(
    position=st.integers(1, 10_000),
    active=st.integers(0, 1_000),
    slots=st.integers(0, 1_000),
    median=st.floats(0.1, 600),
)
def test_eta_never_shrinks_further_back_in_the_queue(
    position: int, active: int, slots: int, median: float
) -> None:
    here = eta_s(position, active, slots, median)
    assert here >= 0
    assert eta_s(position + 1, active, slots, median) >= here
    # More slots never make the wait longer.
    assert eta_s(position, active, slots + 1, median) <= here


@pytest.mark.parametrize(
    ("inflight", "capacity", "slots", "median", "expected"),
    [
        (500, 500, 10, 20.0, 2),  # ten running, ~20 s each: one ends every 2 s
        (500, 500, 1, 20.0, 20),
        (500, 500, 0, 20.0, 20),  # no worker alive: one run time
        (10, 10, 500, 20.0, 2),  # a huge worker, but only ten jobs can be running
        (505, 500, 10, 20.0, 12),  # capacity lowered under a full queue: six must end
        (500, 500, 1000, 0.5, 1),  # never below one second
        (500, 500, 1, 5000.0, MAX_RETRY_AFTER_S),
    ],
)
def test_queue_full_retry_after(
    inflight: int, capacity: int, slots: int, median: float, expected: int
) -> None:
    assert queue_full_retry_after_s(inflight, capacity, slots, median) == expected


def test_user_job_end_estimates() -> None:
    assert user_job_ends_in_s(running_for_s=5, eta_s=None, median_duration_s=20) == 15
    # Past its median a running job gives no better clue than "soon": a quarter run.
    assert user_job_ends_in_s(running_for_s=60, eta_s=None, median_duration_s=20) == 5
    assert user_job_ends_in_s(running_for_s=None, eta_s=40, median_duration_s=20) == 60
    assert user_job_ends_in_s(running_for_s=None, eta_s=None, median_duration_s=20) == 20


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, 1), (-3, 1), (0.2, 1), (1.0, 1), (1.01, 2), (599.5, 600), (10_000, 600)],
)
def test_retry_after_is_whole_seconds_within_bounds(seconds: float, expected: int) -> None:
    assert clamp_retry_after(seconds) == expected
