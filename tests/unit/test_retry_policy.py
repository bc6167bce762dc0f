"""The retry policy: status and exception classification, Retry-After, backoff, retry table."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.config import JobSettings
from backend.errors import ErrorType, UpstreamError
from backend.retry import (
    backoff_s,
    classify_exception,
    classify_status,
    parse_retry_after,
    retry_delay_s,
    should_retry,
)

E = ErrorType


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, E.INVALID_REQUEST),
        (401, E.AUTH),
        (402, E.INSUFFICIENT_CREDITS),
        (403, E.AUTH),
        (404, E.INVALID_REQUEST),
        (405, E.INVALID_REQUEST),
        (408, E.TIMEOUT),
        (409, E.INVALID_REQUEST),
        (413, E.INVALID_REQUEST),
        (422, E.INVALID_REQUEST),
        (429, E.RATE_LIMITED),
        (500, E.SERVER_ERROR),
        (502, E.SERVER_ERROR),
        (503, E.SERVER_ERROR),
        (504, E.SERVER_ERROR),
        (529, E.RATE_LIMITED),
        (599, E.SERVER_ERROR),
    ],
)
def test_classify_status(status: int, expected: ErrorType) -> None:
    assert classify_status(status) is expected


_REQUEST = httpx.Request("POST", "https://api.pixellab.ai/v1/generate-image-pixflux")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused", request=_REQUEST), E.NETWORK),
        (httpx.RemoteProtocolError("peer closed", request=_REQUEST), E.NETWORK),
        (httpx.ReadError("reset", request=_REQUEST), E.NETWORK),
        (httpx.ReadTimeout("slow", request=_REQUEST), E.TIMEOUT),
        (httpx.ConnectTimeout("slow", request=_REQUEST), E.TIMEOUT),
        (httpx.PoolTimeout("busy", request=_REQUEST), E.TIMEOUT),
        (TimeoutError(), E.TIMEOUT),
        (UpstreamError("no credits", error_type=E.INSUFFICIENT_CREDITS), E.INSUFFICIENT_CREDITS),
        (UpstreamError("slow down", error_type=E.RATE_LIMITED), E.RATE_LIMITED),
        (asyncio.CancelledError(), E.CANCELLED),
        (ValueError("bug"), E.INTERNAL),
        (KeyError("bug"), E.INTERNAL),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_classify_exception(exc: BaseException, expected: ErrorType) -> None:
    assert classify_exception(exc) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("2.5", 2.5),
        (None, None),
        ("", None),
        ("-1", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert (
        parse_retry_after(
            format_datetime(datetime(2025, 1, 1, 12, 1, tzinfo=UTC), usegmt=True), now=now
        )
        == 60.0
    )
    # A date already past means "now", not "never".
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("Wed, 32 Foo 2025 99:00:00 GMT", now=now) is None


def test_backoff_doubles_then_caps_without_jitter() -> None:
    delays = [backoff_s(n, base_s=2.0, max_s=20.0, jitter=0.0) for n in range(1, 7)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


def test_backoff_survives_huge_attempts() -> None:
    assert backoff_s(10_000, base_s=1.0, max_s=60.0, jitter=0.0) == 60.0


@pytest.mark.parametrize(
    ("attempt", "base_s", "jitter"), [(0, 1.0, 0.1), (1, 1.0, 1.5), (1, 1.0, -0.1), (1, -1.0, 0.1)]
)
def test_backoff_rejects_nonsense(attempt: int, base_s: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        backoff_s(attempt, base_s=base_s, max_s=10.0, jitter=jitter)


def test_backoff_jitter_spreads_values() -> None:
    rng = random.Random(7)
    delays = {backoff_s(1, base_s=10.0, max_s=60.0, jitter=0.1, rng=rng) for _ in range(50)}
    assert len(delays) > 40
    assert min(delays) < 9.8 and max(delays) > 10.2


attempts = st.integers(min_value=1, max_value=2000)
bases = st.floats(min_value=0.0, max_value=100.0)
caps = st.floats(min_value=0.0, max_value=10_000.0)
jitters = st.floats(min_value=0.0, max_value=1.0)
seeds = st.integers(min_value=0, max_value=2**32)


@given(attempt=attempts, base_s=bases, max_s=caps, jitter=jitters, seed=seeds)
def test_backoff_within_jittered_bounds(
    attempt: int, base_s: float, max_s: float, jitter: float, seed: int
) -> None:
    capped = min(base_s * 2.0 ** min(attempt - 1, 1000), max_s)
    delay = backoff_s(attempt, base_s=base_s, max_s=max_s, jitter=jitter, rng=random.Random(seed))
    assert capped * (1 - jitter) <= delay <= capped * (1 + jitter)
    assert delay <= max_s * (1 + jitter)


@given(attempt=attempts, base_s=bases, max_s=caps)
def test_backoff_never_shrinks_with_more_attempts(
    attempt: int, base_s: float, max_s: float
) -> None:
    now = backoff_s(attempt, base_s=base_s, max_s=max_s, jitter=0.0)
    later = backoff_s(attempt + 1, base_s=base_s, max_s=max_s, jitter=0.0)
    assert now <= later <= max_s


@given(
    attempt=st.integers(min_value=1, max_value=10),
    retry_after=st.floats(min_value=0.0, max_value=3600.0),
    jitter=jitters,
    seed=seeds,
)
def test_retry_after_is_honoured(
    attempt: int, retry_after: float, jitter: float, seed: int
) -> None:
    settings = JobSettings(backoff_base_s=1000.0, backoff_max_s=5000.0, jitter=jitter)
    delay = retry_delay_s(attempt, E.RATE_LIMITED, retry_after, settings, rng=random.Random(seed))
    # Never sooner than asked, at most the jitter later, and not the (much longer) backoff.
    assert retry_after <= delay <= retry_after * (1 + jitter)


def test_retry_after_only_steers_rate_limits() -> None:
    settings = JobSettings(backoff_base_s=2.0, backoff_max_s=60.0, jitter=0.0)
    assert retry_delay_s(2, E.SERVER_ERROR, 30.0, settings) == 4.0
    assert retry_delay_s(2, E.RATE_LIMITED, None, settings) == 4.0
    assert retry_delay_s(2, E.RATE_LIMITED, 30.0, settings) == 30.0


def test_default_retry_delay_is_base_with_ten_percent_jitter() -> None:
    settings = JobSettings()
    delays = [retry_delay_s(1, E.TIMEOUT, None, settings, rng=random.Random(s)) for s in range(200)]
    assert all(1.8 <= d <= 2.2 for d in delays)
    assert min(delays) < 1.85 and max(delays) > 2.15


@pytest.mark.parametrize(
    ("error_type", "attempt", "max_retries", "expected"),
    [
        (E.NETWORK, 1, 1, True),
        (E.TIMEOUT, 1, 1, True),
        (E.RATE_LIMITED, 1, 1, True),
        (E.SERVER_ERROR, 1, 1, True),
        (E.SERVER_ERROR, 2, 1, False),
        (E.SERVER_ERROR, 2, 3, True),
        (E.SERVER_ERROR, 3, 3, True),
        (E.SERVER_ERROR, 4, 3, False),
        (E.NETWORK, 1, 0, False),
        (E.AUTH, 1, 5, False),
        (E.INVALID_REQUEST, 1, 5, False),
        (E.INSUFFICIENT_CREDITS, 1, 5, False),
        (E.CANCELLED, 1, 5, False),
        (E.INTERNAL, 1, 5, False),
    ],
)
def test_should_retry(
    error_type: ErrorType, attempt: int, max_retries: int, expected: bool
) -> None:
    assert should_retry(error_type, attempt, max_retries) is expected
