"""Frees slots whose job no longer runs, so capacity never leaks.

Admission and enqueue are one atomic script, so a crashed API cannot leave a slot without
a job. What can still leave one: a job record deleted by hand, a job that expired from arq's
queue before any worker took it (arq drops it without running our task), or a bug. Each
worker runs this every 30 s; it is idempotent, so several workers running it do no harm.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
import structlog
from arq.constants import in_progress_key_prefix, job_key_prefix

from backend import metrics
from backend.config import JobSettings
from backend.errors import ErrorType
from backend.models import ErrorInfo, JobStatus, Stage
from backend.store import keys
from backend.store.jobs import DeadLetter, JobStore

log = structlog.get_logger(__name__)

# A slot younger than this is left alone: its job may be being written right now.
GRACE_S = 10.0


class Reconciler:
    def __init__(self, redis: aioredis.Redis, jobs: JobStore, settings: JobSettings) -> None:
        self._redis = redis
        self._jobs = jobs
        self._settings = settings

    async def run_once(self, now: float | None = None) -> int:
        """Repair every orphaned slot; returns how many were repaired."""
        now = time.time() if now is None else now
        slots = await self._redis.zrangebyscore(keys.INFLIGHT, "-inf", int((now - GRACE_S) * 1000))
        repaired = 0
        for raw in slots:
            job_id = raw.decode()
            if await self._repair(job_id, now):
                repaired += 1
        if repaired:
            log.warning("slots_reconciled", repaired=repaired)
        return repaired

    async def _repair(self, job_id: str, now: float) -> bool:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.job(job_id), "status")
            pipe.exists(job_key_prefix + job_id, in_progress_key_prefix + job_id)
            pipe.hget(keys.INFLIGHT_USERS, job_id)
            status, arq_keys, user = await pipe.execute()
        if status is None or JobStatus(status.decode()).finished:
            return await self._release(job_id, (user or b"").decode())
        if arq_keys:
            return False  # queued in arq or running: healthy
        record = await self._jobs.get(job_id)
        if record is None or record.status.finished:
            return False
        error = ErrorInfo(
            type=ErrorType.INTERNAL, message="the job was lost from the queue", retryable=False
        )
        failed = record.model_copy(
            update={"status": JobStatus.FAILED, "stage": Stage.FAILED, "finished_at": now,
                    "error": error}
        )  # fmt: skip
        dead = DeadLetter(failed.dead_letter_entry(now), self._settings.dlq_retention_s)
        finished = await self._jobs.finish(
            failed, keep_s=self._settings.keep_finished_s, dead_letter=dead
        )
        if finished:
            metrics.JOBS_FINISHED.labels("failed").inc()
            log.warning("job_lost", job_id=job_id)
        return finished

    async def _release(self, job_id: str, user: str) -> bool:
        """Free the slot of a job that is gone or final, unless it was re-admitted meanwhile."""
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(keys.job(job_id))
            status = await pipe.hget(keys.job(job_id), "status")  # type: ignore[misc]
            if status is not None and not JobStatus(status.decode()).finished:
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.zrem(keys.INFLIGHT, job_id)
            pipe.zrem(keys.ACTIVE, job_id)
            if user:
                pipe.zrem(keys.user_inflight(user), job_id)
            pipe.hdel(keys.INFLIGHT_USERS, job_id)
            await pipe.execute()
        log.warning("slot_released", job_id=job_id, reason="job gone")
        return True
