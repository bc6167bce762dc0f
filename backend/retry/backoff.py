"""Backoff with jitter and the retry decision: pure functions of the attempt and the error."""

from __future__ import annotations

import random

from backend.config import JobSettings
from backend.errors import RETRYABLE, ErrorType

# 2**1000 already overflows any sane cap to inf; larger exponents would raise OverflowError.
_MAX_EXPONENT = 1000


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    jitter: float,
    rng: random.Random | None = None,
) -> float:
    """Delay before the retry that follows try number ``attempt`` (1-based).

    ``base_s * 2**(attempt-1)``, capped at ``max_s``, times a uniform factor in
    ``[1-jitter, 1+jitter]`` so that workers failing together do not retry together.
    Raises ``ValueError`` for ``attempt < 1``, negative delays or a jitter outside [0, 1].
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if base_s < 0 or max_s < 0:
        raise ValueError("base_s and max_s must not be negative")
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be within [0, 1], got {jitter}")
    capped = min(base_s * 2.0 ** min(attempt - 1, _MAX_EXPONENT), max_s)
    return capped * _uniform(1 - jitter, 1 + jitter, rng)


def retry_delay_s(
    attempt: int,
    error_type: ErrorType,
    retry_after_s: float | None,
    settings: JobSettings,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next try after try ``attempt`` failed with ``error_type``.

    A rate limit with a ``Retry-After`` is honoured: never sooner than the server asked,
    plus up to ``settings.jitter`` (10 % by default) so a crowd told the same second spreads
    out. Otherwise exponential backoff from ``settings``.
    """
    if error_type is ErrorType.RATE_LIMITED and retry_after_s is not None:
        return max(0.0, retry_after_s) * _uniform(1.0, 1.0 + settings.jitter, rng)
    return backoff_s(
        attempt,
        base_s=settings.backoff_base_s,
        max_s=settings.backoff_max_s,
        jitter=settings.jitter,
        rng=rng,
    )


def should_retry(error_type: ErrorType, failures: int, max_retries: int) -> bool:
    """Whether to try again after the job's own calls have failed ``failures`` times (this
    one, of ``error_type``, included).

    ``max_retries`` counts retries after the first failure, so at most ``1 + max_retries``
    failed calls. Only the job's own upstream failures count: a try cut short by us (a
    shutdown, a lost worker, our Redis) spends nothing.
    """
    return error_type in RETRYABLE and 1 <= failures <= max_retries


def _uniform(low: float, high: float, rng: random.Random | None) -> float:
    if high <= low:
        return low
    # uniform() may overshoot by an ulp through rounding; the bounds are a promise.
    return min(max((rng or random).uniform(low, high), low), high)
