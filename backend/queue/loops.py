"""The background loops of one worker process, beside arq's own loop.

Six loops run on timers:
- **lease**: arq holds a job's in-progress key for the whole job timeout (+10 s), so a
  killed worker's job would wait up to 10 minutes. We shorten the key to ``lease_s`` and
  renew it (and the attempt's single-flight lock) every ``lease_s / 3``, fenced by the
  attempt's token (``renewLeases``); a dead worker stops renewing and another takes the
  job over within ``lease_s`` + one poll (BullMQ's stalled-job check, in arq's terms). An
  attempt whose fence is gone (cancelled, or taken over while this worker was cut off) is
  abandoned at once.
- **heartbeat**: the worker's concurrency and running count, for readiness and ETAs.
- **reconciler**: frees slots whose job no longer exists (see ``limits.reconciler``).
- **positions**: waiting jobs' places, pushed to their streams (see ``limits.positions``).
- **probe**: while PixelLab calls are paused (401/402), ``GET /balance`` once per interval
  across the deployment, resuming when it answers with credit (see ``limits.upstream``).
- **balance**: ``GET /balance`` once per ``balance_interval_s`` across the deployment,
  recorded in Redis for the admin page (the API never calls PixelLab).
And one more, woken by ``sq:wake``: **webhooks**, the deliveries of finished jobs'
callbacks (see ``queue.webhooks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any

import structlog

from backend.aio import cancel_and_wait, run_every
from backend.errors import UpstreamError
from backend.limits.reconciler import Reconciler
from backend.queue.resources import Resources
from backend.queue.runner import JobRunner
from backend.store import keys

log = structlog.get_logger(__name__)

RECONCILE_EVERY_S = 30.0
PROBE_TIMEOUT_S = 10.0


class WorkerLoops:
    """The background loops of one worker process (see the module's docstring)."""

    def __init__(
        self, resources: Resources, runner: JobRunner, *, max_jobs: int, worker_id: str
    ) -> None:
        self.resources = resources
        self.runner = runner
        self.settings = resources.settings
        self.worker_id = worker_id
        self.max_jobs = max_jobs
        self.running: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        res, jobs = self.resources, self.settings.jobs
        positions = res.position_announcer()
        for every, step in (
            (jobs.lease_s / 3, self.renew_leases),
            (self.settings.worker.heartbeat_s, self.heartbeat),
            (RECONCILE_EVERY_S, Reconciler(res.redis, res.jobs, jobs).run_once),
            (positions.interval_s, positions.run_once),
            (self.settings.pixellab.probe_interval_s, self.probe),
            (self.settings.pixellab.balance_interval_s, self.read_balance),
        ):
            self._tasks.append(asyncio.create_task(run_every(every, step), name=step.__name__))

    def add_task(self, loop: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run another background loop, stopped with the others."""
        self._tasks.append(asyncio.create_task(loop, name=name))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        redis = self.resources.redis
        with contextlib.suppress(Exception):
            await redis.zrem(keys.WORKERS, self.worker_id)
            await redis.delete(keys.worker(self.worker_id))

    async def renew_leases(self) -> None:
        leases = self.runner.leases()
        if not leases:
            return
        lost = await self.resources.jobs.renew_leases(leases, lease_ms=self.runner.lease_ms)
        for job_id in lost:
            self.runner.abandon(job_id)

    async def probe(self) -> None:
        """While PixelLab calls are paused (401/402), ask ``GET /balance`` once per interval
        across the deployment, and resume when the key works and there is credit."""
        upstream = self.resources.upstream
        if not await upstream.paused():
            return
        usd = await self._balance_once_per(
            keys.PROBE_TICK, self.settings.pixellab.probe_interval_s, "upstream_probe_failed"
        )
        if usd is None:
            return
        if usd > 0:
            await upstream.resume(by="probe")
        else:
            log.info("upstream_probe_no_credit", usd=usd)

    async def read_balance(self) -> None:
        """Read ``GET /balance`` once per interval across the deployment and record it for
        the admin page; a failed read keeps the last figure."""
        await self._balance_once_per(
            keys.BALANCE_TICK, self.settings.pixellab.balance_interval_s, "balance_read_failed"
        )

    async def _balance_once_per(self, tick: str, interval_s: float, failed: str) -> float | None:
        """``GET /balance``, recorded, if this worker holds the deployment's ``tick`` key for
        ``interval_s``; None when another worker's turn or a failed read (logged as
        ``failed``)."""
        interval_ms = int(interval_s * 1000)
        if not await self.resources.redis.set(tick, self.worker_id, nx=True, px=interval_ms):
            return None
        try:
            usd = await self.runner.pixellab.balance_usd(timeout_s=PROBE_TIMEOUT_S)
        except UpstreamError as exc:
            log.info(failed, error_type=exc.error_type.value)
            return None
        await self.resources.upstream.record_balance(usd)
        return usd

    async def recovered(self) -> None:
        """First acts after a Redis outage: beat, and pause takeovers for one lease, so the
        attempts whose leases lapsed in the outage get them back instead of being run (and
        paid for) again elsewhere."""
        await self.heartbeat()
        await self.resources.jobs.pause_takeovers(for_ms=self.runner.lease_ms)
        await self.renew_leases()
        log.info("worker_redis_recovered", running=len(self.runner.attempts))

    async def heartbeat(self) -> None:
        now = time.time()
        ttl = int(self.settings.worker.heartbeat_s * 3) + 1
        async with self.resources.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.WORKERS, {self.worker_id: int(now * 1000)})
            pipe.zremrangebyscore(keys.WORKERS, "-inf", int((now - 3600) * 1000))
            pipe.hset(
                keys.worker(self.worker_id),
                mapping={"concurrency": self.max_jobs, "running": len(self.running),
                         "pid": os.getpid(), "host": socket.gethostname(), "beat_at": now},
            )  # fmt: skip
            pipe.expire(keys.worker(self.worker_id), ttl)
            await pipe.execute()
