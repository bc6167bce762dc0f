"""Frees slots whose job no longer runs, so capacity never leaks.

Admission and enqueue are one atomic script, so a crashed API cannot leave a slot without
a job. What can still leave one: a job record deleted by hand, a job that expired from arq's
queue before any worker took it (arq drops it without running our task), or a bug. Each
worker runs this every 30 s; it is idempotent, so several workers running it do no harm.

Two kinds of orphan, two remedies:
- the job record is gone or already final: the slot is released at once (no legitimate
  state looks like that; ``finishJob`` sets the final status and frees the slot together);
- the job is still ``queued``/``active`` but arq no longer holds it (no in-progress key, and
  no job key in the queue): it is failed and dead-lettered as lost, which frees the slot.
  The reconciler's own reads are not one atomic step (a job can start or end between
  them), so a job is only declared lost when a later run, at least ``CONFIRM_S`` after the
  first, still finds it so; the failure is a compare-and-set on the record it read.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
import structlog
from arq.constants import in_progress_key_prefix, job_key_prefix

from backend import metrics
from backend.config import JobSettings
from backend.errors import ErrorType
from backend.models import ErrorInfo, JobStatus
from backend.store import keys
from backend.store.jobs import DeadLetter, Guard, JobStore, Written

log = structlog.get_logger(__name__)

# Slots younger than this are left alone: it covers clock skew between the API host that
# stamped the slot and the worker host that reads it.
GRACE_S = 10.0
# A job must look lost this long, over two runs, before it is failed (see the docstring).
CONFIRM_S = 5.0


class Reconciler:
    """Keep one instance per process: it remembers suspects between runs."""

    def __init__(self, redis: aioredis.Redis, jobs: JobStore, settings: JobSettings) -> None:
        self._redis = redis
        self._jobs = jobs
        self._settings = settings
        self._queue_name = jobs.queue_name
        self._suspects: dict[str, float] = {}  # job id -> when first found lost

    async def run_once(self, now: float | None = None) -> int:
        """Repair every orphaned slot; returns how many were repaired."""
        now = time.time() if now is None else now
        slots = await self._redis.zrangebyscore(keys.INFLIGHT, "-inf", int((now - GRACE_S) * 1000))
        repaired = 0
        suspects: dict[str, float] = {}
        for raw in slots:
            job_id = raw.decode()
            if await self._repair(job_id, now, suspects):
                repaired += 1
        self._suspects = suspects  # a suspect not seen again this run has recovered
        if repaired:
            log.warning("slots_reconciled", repaired=repaired)
        return repaired

    async def _repair(self, job_id: str, now: float, suspects: dict[str, float]) -> bool:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.job(job_id), "status")
            pipe.exists(in_progress_key_prefix + job_id)
            pipe.exists(job_key_prefix + job_id)
            pipe.zscore(self._queue_name, job_id)
            pipe.hget(keys.INFLIGHT_USERS, job_id)
            status, in_progress, job_key, queued_at, user = await pipe.execute()
        if status is None or JobStatus(status.decode()).finished:
            return await self._release(job_id, (user or b"").decode())
        if in_progress or (job_key and queued_at is not None):
            return False  # running, or waiting in arq's queue: healthy
        first_seen = self._suspects.get(job_id, now)
        suspects[job_id] = first_seen
        if now - first_seen < CONFIRM_S:
            return False
        return await self._fail_lost(job_id, now)

    async def _fail_lost(self, job_id: str, now: float) -> bool:
        record = await self._jobs.get(job_id)
        if record is None or record.status.finished:
            return False
        error = ErrorInfo(
            type=ErrorType.INTERNAL, message="the job was lost from the queue", retryable=False
        )
        failed = record.finished_as(JobStatus.FAILED, at=now, error=error)
        dead = DeadLetter(
            failed.dead_letter_entry(now), self._settings.dlq_retention_s, self._settings.dlq_max
        )
        written, _ = await self._jobs.finish(
            failed,
            guard=Guard.rev(record.rev),
            keep_s=self._settings.keep_finished_s,
            dead_letter=dead,
        )
        finished = written is Written.APPLIED
        if finished:
            metrics.JOBS_FINISHED.labels("failed").inc()
            log.warning("job_lost", job_id=job_id)
        return finished

    async def _release(self, job_id: str, user: str) -> bool:
        """Free the slot of a job that is gone or final, unless it was re-admitted meanwhile."""
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(keys.job(job_id))
            status, owner = await pipe.hmget(keys.job(job_id), ["status", "user"])  # type: ignore[misc]
            if status is not None and not JobStatus(status.decode()).finished:
                return False
            # The owner map is written with the slot; the record's own field is a fallback.
            user = user or (owner or b"").decode()
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.zrem(keys.INFLIGHT, job_id)
            pipe.zrem(keys.ACTIVE, job_id)
            if user:
                pipe.zrem(keys.user_inflight(user), job_id)
            pipe.hdel(keys.INFLIGHT_USERS, job_id)
            removed, *_ = await pipe.execute()
        if not removed:  # the job finished between the listing and now: nothing to repair
            return False
        log.warning("slot_released", job_id=job_id, reason="job gone or finished")
        return True
