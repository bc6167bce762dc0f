"""What becomes of a job when an attempt ends without its image, and the writes that
record it.

    PixelLab's own failure, retryable     -> back to the queue after a backoff (spends a retry)
    PixelLab's final word, or retries out -> failed + dead-lettered
    429 (throttled)                       -> back to the queue after Retry-After, spending
                                             nothing, until 429s have deferred it
                                             ``throttle_max_wait_s`` in all
    401 / 402 (the account's)             -> calls paused for everyone; the job back in the
                                             queue, spending nothing
    stopped by us (shutdown, our Redis)   -> back to the queue at once, spending nothing

A known outcome is written through a Redis outage (``through_outage``): found again by
another attempt it would cost a second PixelLab call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from redis.exceptions import RedisError

from backend import metrics
from backend.cache import CachedImage
from backend.config import JobSettings
from backend.errors import ErrorType, UpstreamError
from backend.limits.estimates import QueueEstimates
from backend.limits.upstream import Upstream
from backend.models import Attempt, ErrorInfo, JobRecord, JobStatus
from backend.queue.producer import result_info
from backend.retry import (
    backoff_s,
    classify_exception,
    retry_delay_s,
    should_retry,
    visible_message,
)
from backend.store.jobs import DeadLetter, Guard, JobStore, Requeued, Written
from backend.store.scripts import ScriptCall

log = structlog.get_logger(__name__)
T = TypeVar("T")

# After our own Redis failed: try again this often, for this long.
STORE_RETRY_S, STORE_RETRY_FOR_S = 1.0, 60.0
# Failures that are the account's (a bad key, no credit), not the job's: they pause calls.
ACCOUNT_WIDE = frozenset({ErrorType.AUTH, ErrorType.INSUFFICIENT_CREDITS})


@dataclass
class Outcomes:
    jobs: JobStore
    upstream: Upstream
    estimates: QueueEstimates
    settings: JobSettings
    # The most 429s may defer one job, in all (pixellab.throttle_max_wait_s).
    throttle_max_wait_s: float = 3600.0

    async def failed(self, record: JobRecord, token: str, exc: Exception) -> None:
        error_type = classify_exception(exc)
        if error_type is ErrorType.INTERNAL:
            log.exception("job_crashed", error_type=type(exc).__name__)
        if error_type in ACCOUNT_WIDE:
            await self._account_failure(record, token, error_type, exc)
            return
        if error_type is ErrorType.RATE_LIMITED and await self._throttled(record, token, exc):
            return
        failures = record.failures + 1
        # Past the throttle ceiling a 429 is final: the job has waited long enough.
        retry = error_type is not ErrorType.RATE_LIMITED and should_retry(
            error_type, failures, self.settings.max_retries
        )
        message = visible_message(error_type, exc, record.job_id)
        error = ErrorInfo(type=error_type, message=message, retryable=retry)
        history = close_attempt(record.history, time.time(), "failed", error)
        failed = record.model_copy(update={"failures": failures})
        if not retry:
            await self.dead_letter(failed, Guard.fence(token), error, history)
            return
        retry_after = exc.retry_after_s if isinstance(exc, UpstreamError) else None
        delay = retry_delay_s(failures, error_type, retry_after, self.settings)
        queued = failed.requeued(history=history, error=error)
        placed = await self.requeue(queued, token, defer_s=delay, extra=("error", "failures"))
        if placed:
            metrics.JOB_RETRIES.labels(error_type.value).inc()
            log.info("job_retry_scheduled", error_type=error_type.value, delay_s=round(delay, 2))

    async def _throttled(self, record: JobRecord, token: str, exc: Exception) -> bool:
        """A 429 is backpressure, not the job's failure: back to the queue after the
        server's ``Retry-After`` (else a jittered backoff) without spending a retry, until
        429s have deferred the job ``throttle_max_wait_s`` in all. False past that."""
        retry_after = exc.retry_after_s if isinstance(exc, UpstreamError) else None
        throttles = 1 + sum(
            a.error is not None and a.error.type is ErrorType.RATE_LIMITED for a in record.history
        )
        delay = retry_after if retry_after is not None else backoff_s(
            throttles, base_s=self.settings.backoff_base_s, max_s=self.settings.backoff_max_s,
            jitter=self.settings.jitter,
        )  # fmt: skip
        delay = retry_delay_s(throttles, ErrorType.RATE_LIMITED, delay, self.settings)
        throttled_s = record.throttled_s + delay
        if throttled_s > self.throttle_max_wait_s:
            return False
        error = ErrorInfo(
            type=ErrorType.RATE_LIMITED,
            message=visible_message(ErrorType.RATE_LIMITED, exc, record.job_id),
            retryable=True,
        )
        history = close_attempt(record.history, time.time(), "requeued", error)
        queued = record.model_copy(update={"throttled_s": throttled_s}).requeued(
            history=history, error=error
        )
        if await self.requeue(queued, token, defer_s=delay, extra=("error", "throttled_s")):
            log.info("job_throttled", delay_s=round(delay, 2), throttled_s=round(throttled_s, 1))
        return True

    async def _account_failure(
        self, record: JobRecord, token: str, error_type: ErrorType, exc: Exception
    ) -> None:
        """A 401 or 402 is the account's, not the job's: pause every call, keep the job."""
        await self.upstream.pause(error_type.value)
        error = ErrorInfo(
            type=error_type, message=visible_message(error_type, exc, record.job_id),
            retryable=True,
        )  # fmt: skip
        history = close_attempt(record.history, time.time(), "requeued", error)
        queued = record.requeued(history=history, error=error)
        if await self.requeue(queued, token, defer_s=0.0, extra=("error",)):
            log.warning("job_held_for_upstream", error_type=error_type.value)

    async def release_quietly(self, token: str, outcome: str) -> None:
        """Give a permit back; if Redis is away, its lease frees it."""
        try:
            await self.upstream.release(token, outcome)
        except RedisError:
            log.info("permit_left_to_lease")

    async def dead_letter(
        self, record: JobRecord, guard: Guard, error: ErrorInfo, history: list[Attempt]
    ) -> None:
        now = time.time()
        failed = record.finished_as(JobStatus.FAILED, at=now, error=error, history=history)
        dead = DeadLetter(
            failed.dead_letter_entry(now), self.settings.dlq_retention_s, self.settings.dlq_max
        )
        written, _ = await self.through_outage(
            lambda: self.jobs.finish(
                failed, guard=guard, keep_s=self.settings.keep_finished_s, dead_letter=dead
            )
        )
        if written is Written.APPLIED:
            metrics.JOBS_FINISHED.labels("failed").inc()
            log.warning(
                "job_dead_lettered", job_id=record.job_id, error_type=error.type.value,
                attempts=record.attempts, failures=record.failures, stalls=record.stalls,
            )  # fmt: skip

    async def requeue_interrupted(self, record: JobRecord, token: str, *, reason: str) -> bool:
        """Back to the queue at once, spending no retry: the interruption was ours."""
        history = close_attempt(record.history, time.time(), "interrupted")
        placed = await self.requeue(record.requeued(history=history), token, defer_s=0.0)
        if placed:
            log.info("job_requeued", reason=reason)
        return placed

    async def requeue_after_store_failure(self, record: JobRecord, token: str) -> None:
        """Our Redis failed mid-attempt, before any outcome: requeue it once Redis answers,
        or leave it to the lease."""
        try:
            await self.requeue_interrupted(record, token, reason="store failed")
        except RedisError:
            log.warning("job_left_to_lease", job_id=record.job_id)

    async def through_outage(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run a store write, trying again through a Redis outage for up to
        ``STORE_RETRY_FOR_S``: an outcome that is known (a paid image, PixelLab's final
        word) is written when Redis is back, rather than found again by another call. The
        attempt stays registered meanwhile, so its lease is renewed as soon as Redis
        answers. Raises the last ``RedisError`` after that."""
        deadline = time.monotonic() + STORE_RETRY_FOR_S
        while True:
            try:
                return await write()
            except RedisError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(STORE_RETRY_S)

    async def requeue(
        self, queued: JobRecord, token: str, *, defer_s: float, extra: tuple[str, ...] = ()
    ) -> bool:
        async def write() -> Requeued | None:
            rates = await self.estimates.rates()
            return await self.jobs.requeue(
                queued, "status", "stage", "progress", "history", *extra,
                token=token, defer_s=defer_s, slots=rates.slots,
                median_duration_s=rates.median_duration_s,
            )  # fmt: skip

        placed = await self.through_outage(write)
        if placed is None:
            log.info("job_abandoned", reason="fenced out before requeue")
        return placed is not None

    async def close_lost_attempt(self, record: JobRecord) -> JobRecord | None:
        """A job still ``active`` lost its runner (arq let us take it: its lease lapsed).

        Its worker still beating means the attempt was cut off by us (its Redis link, a
        stall of its loop): ``interrupted``. A dead worker makes it ``stalled``, and past
        ``max_stalls`` the job is dead-lettered (a job that keeps killing its workers).
        Returns the record with the lost attempt closed, or None if it was dead-lettered.
        """
        if record.status is not JobStatus.ACTIVE:
            return record
        if await self.jobs.takeovers_paused(lease_ms=int(self.settings.lease_s * 1000)):
            # Just after a Redis outage: its runner may be alive and about to renew.
            log.info("job_takeover_deferred", job_id=record.job_id)
            return None
        alive = await self.jobs.worker_alive(record.worker)
        outcome = "interrupted" if alive else "stalled"
        stalls = record.stalls + (0 if alive else 1)
        history = close_attempt(record.history, time.time(), outcome)
        closed = record.model_copy(update={"history": history, "stalls": stalls})
        log.warning("job_taken_over", job_id=record.job_id, outcome=outcome, stalls=stalls)
        if stalls <= self.settings.max_stalls:
            return closed
        message = f"the job's worker was lost {stalls} times"
        error = ErrorInfo(type=ErrorType.INTERNAL, message=message, retryable=False)
        await self.dead_letter(closed, Guard.rev(record.rev), error, history)
        return None

    async def completed(
        self, record: JobRecord, token: str, image: CachedImage, *, shared: bool, duration_s: float
    ) -> None:
        """The job completed with ``image`` (its own call's, or shared when ``shared``)."""
        call = self.completion(record, token, image, shared=shared, duration_s=duration_s)
        written, _ = await self.through_outage(lambda: self.jobs.run_finish(call))
        self.log_completion(written, shared=shared, duration_s=duration_s)

    def completion(
        self, record: JobRecord, token: str, image: CachedImage, *, shared: bool, duration_s: float
    ) -> ScriptCall:
        """The completion's write, to run alone (``completed``) or with others."""
        now = time.time()
        done = record.finished_as(
            JobStatus.COMPLETED,
            at=now,
            cached=shared,
            error=None,  # an earlier try's failure is history now
            result=result_info(record.job_id, image),
            history=close_attempt(record.history, now, "completed"),
        )
        return self.jobs.finish_call(
            done, guard=Guard.fence(token), keep_s=self.settings.keep_finished_s,
            duration_s=duration_s,
        )  # fmt: skip

    @staticmethod
    def log_completion(written: Written, *, shared: bool, duration_s: float) -> None:
        if written is Written.APPLIED:
            metrics.JOBS_FINISHED.labels("completed").inc()
            log.info("job_completed", duration_s=round(duration_s, 3), shared=shared)
        else:
            log.warning("job_abandoned", reason="fenced out at completion")


def close_attempt(
    history: list[Attempt], now: float, outcome: Any, error: ErrorInfo | None = None
) -> list[Attempt]:
    if not history:
        return history
    last = history[-1].model_copy(update={"finished_at": now, "outcome": outcome, "error": error})
    return [*history[:-1], last]
