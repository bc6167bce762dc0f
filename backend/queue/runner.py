"""One job's life on a worker: start, single flight, PixelLab, cache, then finish or retry.

Outcomes and where they go:
    success              -> completed, written through to the cache, slot released
    retryable failure    -> back to queued, arq ``Retry(defer=backoff)``
    final failure        -> failed + dead-lettered, slot released
    cancelled by a user  -> already finished by the API; the PixelLab call is abandoned
    worker shutting down -> back to queued; arq runs it again on another worker
    worker killed        -> its lease lapses; the next worker finds it ``active`` (stalled)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from arq.worker import Retry
from redis.exceptions import RedisError

from backend import metrics
from backend.cache import CachedImage, TieredCache
from backend.config import JobSettings
from backend.errors import ErrorType, UpstreamError
from backend.models import Attempt, ErrorInfo, JobRecord, JobStatus, Stage
from backend.pixellab import PixelLabClient
from backend.queue.producer import result_info
from backend.retry import classify_exception, retry_delay_s, should_retry
from backend.store import keys
from backend.store.jobs import DeadLetter, JobStore

log = structlog.get_logger(__name__)

FLIGHT_POLL_S = 0.1
STORE_RETRY_S = 1.0


@dataclass
class JobRunner:
    jobs: JobStore
    cache: TieredCache
    pixellab: PixelLabClient
    redis: aioredis.Redis
    settings: JobSettings
    # job id -> single-flight lock it holds; the worker's lease loop renews these.
    held_flights: dict[str, str] = field(default_factory=dict)
    _running: set[asyncio.Task[Any]] = field(default_factory=set)

    async def run(self, job_id: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await self._run(job_id)
        except RedisError as exc:
            # Our own store failed: not the job's fault, and not a reason to drop it (arq
            # counts a plain exception as final). Ask arq to run it again; the next try finds
            # it ``active`` and records this one as stalled.
            log.warning("job_store_failed", job_id=job_id, error=type(exc).__name__)
            raise Retry(defer=STORE_RETRY_S) from exc
        finally:
            self._running.discard(task)

    async def drain(self, timeout_s: float) -> None:
        """Wait for running jobs to wind up (they requeue themselves when cancelled).

        arq's ``close()`` gathers its job tasks without ``return_exceptions``, so it moves
        on to ``on_shutdown`` at the first cancelled one; clients must outlive the rest.
        """
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout_s)

    async def _run(self, job_id: str) -> None:
        record = await self.jobs.get(job_id)
        if record is None or record.status.finished:
            log.info("job_skipped", job_id=job_id, reason="finished or gone")
            return
        with structlog.contextvars.bound_contextvars(
            job_id=job_id, user_id=record.user, request_id=record.request_id
        ):
            if record.status is JobStatus.ACTIVE:
                record = _mark_stalled(record)
                stalls = sum(a.outcome == "stalled" for a in record.history)
                if stalls > self.settings.max_stalls:
                    message = f"the job's worker was lost {stalls} times"
                    await self._fail(record, ErrorType.INTERNAL, message, retry=False)
                    return
                log.warning("job_stalled", stalls=stalls)
            await self._attempt(record)

    async def _attempt(self, record: JobRecord) -> None:
        now = time.time()
        record = record.model_copy(
            update={
                "status": JobStatus.ACTIVE,
                "stage": Stage.STARTED,
                "progress": 5,
                "attempts": record.attempts + 1,
                "history": [*record.history, Attempt(number=record.attempts + 1, started_at=now)],
                "started_at": record.started_at or now,
            }
        )
        started = await self.jobs.transition(
            record, "status", "stage", "progress", "attempts", "history", "started_at",
            allowed_from=(JobStatus.QUEUED, JobStatus.ACTIVE), active="add",
        )  # fmt: skip
        if not started:
            return
        if record.attempts == 1:
            metrics.JOB_WAIT.observe(max(now - record.created_at, 0.0))
        log.info("job_started", attempt=record.attempts)
        began = time.monotonic()
        try:
            async with asyncio.timeout(record.timeout_s):
                image, shared = await self._generate(record)
        except asyncio.CancelledError:
            # Awaited directly (not shielded): the worker waits for this before it closes
            # its clients, and a cancellation is delivered only once.
            await self._on_cancelled(record)
            raise
        except RedisError:
            raise  # our own store failed, not the job: see run()
        except Exception as exc:  # every other failure is classified; none escapes
            metrics.JOB_DURATION.observe(time.monotonic() - began)
            await self._on_failure(record, exc)
            return
        duration = time.monotonic() - began
        metrics.JOB_DURATION.observe(duration)
        await self._complete(record, image, shared=shared, duration_s=duration)

    async def _generate(self, record: JobRecord) -> tuple[CachedImage, bool]:
        """The image, and whether it came from another job's call (cache or single flight)."""
        cached = await self.cache.get(record.cache_key)
        if cached is not None:
            return cached, True
        flight_key = keys.flight(record.cache_key)
        owner = await self._take_flight(flight_key, record.job_id)
        if not owner:
            shared = await self._wait_for_flight(flight_key, record.cache_key)
            if shared is not None:
                return shared, True
            log.info("single_flight_gave_up", waited_s=self.settings.single_flight_wait_s)
        try:
            await self._progress(record, Stage.SUBMITTED, 10)
            generated = await self.pixellab.generate_pixflux(
                record.request, timeout_s=record.timeout_s
            )
            await self._progress(record, Stage.RECEIVED, 90)
            image = CachedImage.new(
                record.cache_key,
                generated.png,
                width=generated.width,
                height=generated.height,
                request=record.request,
            )
            await self.cache.put(image)
            return image, False
        finally:
            if owner:
                self.held_flights.pop(record.job_id, None)
                await self._release_flight(flight_key, record.job_id)

    async def _take_flight(self, flight_key: str, job_id: str) -> bool:
        """Take the single-flight lock for this key.

        The lock is a lease (renewed by the worker's lease loop while the job runs), so a
        crashed holder frees it within ``lease_s``. A lock still held by this same job is a
        previous attempt that died with its worker: taken over at once.
        """
        lease_ms = int(self.settings.lease_s * 1000)
        owner = bool(await self.redis.set(flight_key, job_id, nx=True, px=lease_ms))
        if not owner and (await self.redis.get(flight_key) or b"").decode() == job_id:
            owner = bool(await self.redis.set(flight_key, job_id, px=lease_ms))
        if owner:
            self.held_flights[job_id] = flight_key
        return owner

    async def _wait_for_flight(self, flight_key: str, cache_key: str) -> CachedImage | None:
        """Wait (bounded) for the job that holds the flight lock, then read its result."""
        deadline = time.monotonic() + self.settings.single_flight_wait_s
        # Polling Redis, not an in-process Event: the lock holder may be another worker.
        while time.monotonic() < deadline and await self.redis.exists(flight_key):  # noqa: ASYNC110
            await asyncio.sleep(FLIGHT_POLL_S)
        return await self.cache.get(cache_key)

    async def _release_flight(self, flight_key: str, job_id: str) -> None:
        await self.jobs.release_lock(flight_key, owner=job_id)

    async def _progress(self, record: JobRecord, stage: Stage, progress: int) -> None:
        update = record.model_copy(update={"stage": stage, "progress": progress})
        await self.jobs.transition(update, "stage", "progress", allowed_from=(JobStatus.ACTIVE,))

    async def _complete(
        self, record: JobRecord, image: CachedImage, *, shared: bool, duration_s: float
    ) -> None:
        now = time.time()
        done = record.finished_as(
            JobStatus.COMPLETED,
            at=now,
            cached=shared,
            result=result_info(record.job_id, image),
            history=_close_attempt(record.history, now, "completed"),
        )
        if await self.jobs.finish(
            done, keep_s=self.settings.keep_finished_s, duration_s=duration_s
        ):
            metrics.JOBS_FINISHED.labels("completed").inc()
            log.info("job_completed", duration_s=round(duration_s, 3), shared=shared)

    async def _on_failure(self, record: JobRecord, exc: Exception) -> None:
        error_type = ErrorType.TIMEOUT if isinstance(exc, TimeoutError) else classify_exception(exc)
        message = str(exc) or type(exc).__name__
        if error_type is ErrorType.INTERNAL:
            log.exception("job_crashed", error=message)
        retry = should_retry(error_type, record.attempts, self.settings.max_retries)
        await self._fail(record, error_type, message, retry=retry, exc=exc)

    async def _fail(
        self,
        record: JobRecord,
        error_type: ErrorType,
        message: str,
        *,
        retry: bool,
        exc: Exception | None = None,
    ) -> None:
        now = time.time()
        error = ErrorInfo(type=error_type, message=message[:500], retryable=retry)
        history = _close_attempt(record.history, now, "failed", error)
        if retry:
            retry_after = exc.retry_after_s if isinstance(exc, UpstreamError) else None
            delay = retry_delay_s(record.attempts, error_type, retry_after, self.settings)
            queued = record.requeued(history=history, error=error)
            await self.jobs.transition(
                queued, "status", "stage", "progress", "history", "error",
                allowed_from=(JobStatus.ACTIVE,), active="rem",
            )  # fmt: skip
            metrics.JOB_RETRIES.labels(error_type.value).inc()
            log.info("job_retry_scheduled", error_type=error_type.value, delay_s=round(delay, 2))
            raise Retry(defer=delay)
        failed = record.finished_as(JobStatus.FAILED, at=now, error=error, history=history)
        entry = failed.dead_letter_entry(now)
        dead = DeadLetter(entry, self.settings.dlq_retention_s)
        if await self.jobs.finish(failed, keep_s=self.settings.keep_finished_s, dead_letter=dead):
            metrics.JOBS_FINISHED.labels("failed").inc()
            log.warning("job_dead_lettered", error_type=error_type.value, attempts=record.attempts)

    async def _on_cancelled(self, record: JobRecord) -> None:
        """Cancelled by a user (already finished by the API) or by a shutdown (requeue)."""
        current = await self.jobs.get(record.job_id)
        if current is None or current.status is not JobStatus.ACTIVE:
            log.info("job_abandoned", reason="cancelled")
            return
        requeued = record.requeued(history=_close_attempt(record.history, time.time(), "requeued"))
        await self.jobs.transition(
            requeued, "status", "stage", "progress", "history",
            allowed_from=(JobStatus.ACTIVE,), active="rem",
        )  # fmt: skip
        log.info("job_requeued", reason="worker shutting down")


def _close_attempt(
    history: list[Attempt], now: float, outcome: Any, error: ErrorInfo | None = None
) -> list[Attempt]:
    if not history:
        return history
    last = history[-1].model_copy(update={"finished_at": now, "outcome": outcome, "error": error})
    return [*history[:-1], last]


def _mark_stalled(record: JobRecord) -> JobRecord:
    history = _close_attempt(record.history, time.time(), "stalled")
    return record.model_copy(update={"history": history})
