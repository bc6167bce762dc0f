"""Classify PixelLab failures into ``ErrorType`` and read its ``Retry-After`` hints.

Pure functions, no I/O: the PixelLab client and the worker both lean on them, so one table
decides what counts as retryable everywhere.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx

from backend.errors import ErrorType, UpstreamError

_AUTH = frozenset({401, 403})
_TIMEOUT = frozenset({408})
# PixelLab answers 429 for "too many concurrent jobs" and 529 for "rate limit exceeded /
# overloaded"; both mean "slow down", not "broken".
_RATE_LIMITED = frozenset({429, 529})


def classify_status(status: int) -> ErrorType:
    """Map a non-2xx PixelLab HTTP status to the error type that decides retrying.

    Statuses outside 4xx (an unexpected 1xx/3xx, or any 5xx) count as the server's fault.
    """
    if status in _AUTH:
        return ErrorType.AUTH
    if status == 402:
        return ErrorType.INSUFFICIENT_CREDITS
    if status in _TIMEOUT:
        return ErrorType.TIMEOUT
    if status in _RATE_LIMITED:
        return ErrorType.RATE_LIMITED
    if 400 <= status < 500:
        return ErrorType.INVALID_REQUEST
    return ErrorType.SERVER_ERROR


def classify_exception(exc: BaseException) -> ErrorType:
    """Map an exception raised while calling PixelLab to an error type.

    ``UpstreamError`` keeps its own type; timeouts (httpx's and the builtin one that
    ``asyncio.timeout`` raises) are ``TIMEOUT``; other transport failures are ``NETWORK``;
    a cancelled task is ``CANCELLED``; anything else is a bug of ours, ``INTERNAL``.
    """
    if isinstance(exc, UpstreamError):
        return exc.error_type
    # httpx.TimeoutException is a TransportError, so it must be tested first.
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return ErrorType.TIMEOUT
    if isinstance(exc, httpx.TransportError):
        return ErrorType.NETWORK
    if isinstance(exc, asyncio.CancelledError):
        return ErrorType.CANCELLED
    return ErrorType.INTERNAL


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    A date in the past gives ``0.0``; a missing, negative, non-finite or unparsable value
    gives ``None`` (the caller then falls back to its own backoff).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(text, time.time() if now is None else now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _seconds_until_http_date(text: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP dates are always GMT; the obsolete ``-0000`` form comes back naive.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
