"""The arq worker: resources opened in ``on_startup``, closed in ``on_shutdown``.

Besides arq's own loop, each worker keeps four small background loops:
- **lease**: arq holds a job's in-progress key for the whole job timeout (+10 s), so a
  killed worker's job would wait up to 10 minutes. We shorten the key to ``lease_s`` and
  renew it for running jobs; a dead worker stops renewing and another takes the job over
  within ``lease_s`` + one poll (BullMQ's stalled-job check, in arq's terms).
- **heartbeat**: the worker's concurrency and running count, for readiness and ETAs.
- **reconciler**: frees slots whose job no longer exists (see ``limits.reconciler``).
- **positions**: waiting jobs' places, pushed to their streams (see ``limits.positions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from typing import Any

import structlog
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import Worker, func
from redis.exceptions import RedisError

from backend.aio import cancel_and_wait, run_every
from backend.config import Settings
from backend.limits.reconciler import Reconciler
from backend.pixellab import PixelLabClient, create_http_client
from backend.queue.producer import TASK_NAME
from backend.queue.resources import Resources, open_resources
from backend.queue.runner import JobRunner
from backend.queue.serializer import deserialize, serialize
from backend.queue.tasks import generate_sprite
from backend.store import keys

log = structlog.get_logger(__name__)

# arq's own timeout sits above ours, so ours fires first and is classified as ``timeout``.
ARQ_TIMEOUT_MARGIN_S = 30
# Tries are counted by us (attempt history, stalls); arq's counter is only a backstop.
ARQ_MAX_TRIES = 1000
RECONCILE_EVERY_S = 30.0
REDIS_RETRY_S = 1.0


class WorkerLoops:
    """The lease, heartbeat, reconciler and position loops of one worker process."""

    def __init__(
        self, resources: Resources, *, max_jobs: int, held_flights: dict[str, str]
    ) -> None:
        self.resources = resources
        self.held_flights = held_flights
        self.settings = resources.settings
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
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
        ):
            self._tasks.append(asyncio.create_task(run_every(every, step), name=step.__name__))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        redis = self.resources.redis
        with contextlib.suppress(Exception):
            await redis.zrem(keys.WORKERS, self.worker_id)
            await redis.delete(keys.worker(self.worker_id))

    async def renew_leases(self) -> None:
        if not self.running and not self.held_flights:
            return
        lease_ms = int(self.settings.jobs.lease_s * 1000)
        async with self.resources.redis.pipeline(transaction=False) as pipe:
            for job_id in self.running:
                pipe.pexpire(in_progress_key_prefix + job_id, lease_ms)
            for flight_key in self.held_flights.values():
                pipe.pexpire(flight_key, lease_ms)
            await pipe.execute()

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


class SpriteWorker(Worker):
    """arq's worker, kept alive through a Redis outage.

    arq lets a Redis error escape its poll loop, which ends the worker. Here the loop logs it,
    waits, and polls again, so a worker recovers by itself when Redis returns.
    """

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            log.warning("worker_redis_unavailable", error=type(exc).__name__)
            await asyncio.sleep(REDIS_RETRY_S)

    async def close(self) -> None:
        """arq's close, made to run ``on_shutdown`` even when a job task was cancelled.

        arq gathers its job tasks without ``return_exceptions``, so one cancelled task would
        end ``close()`` early: no ``on_shutdown``, clients and background loops left open.
        """
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        await super().close()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except (RedisError, OSError):
            # arq had taken a semaphore slot and counted the job it was starting.
            self.job_counter -= 1
            self.sem.release()
            raise


def build_worker(settings: Settings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    async def on_startup(ctx: dict[str, Any]) -> None:
        resources = await open_resources(settings)
        http = create_http_client(settings.pixellab)
        runner = JobRunner(
            jobs=resources.jobs,
            cache=resources.cache,
            pixellab=PixelLabClient(http),
            redis=resources.redis,
            settings=settings.jobs,
        )
        loops = WorkerLoops(
            resources, max_jobs=settings.worker.max_jobs, held_flights=runner.held_flights
        )
        ctx.update(resources=resources, http=http, loops=loops, runner=runner)
        await loops.heartbeat()
        loops.start()
        log.info("worker_started", worker_id=loops.worker_id, max_jobs=loops.max_jobs)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if "loops" in ctx:
            await ctx["runner"].drain(timeout_s=10)
            await ctx["loops"].stop()
            await ctx["http"].aclose()
            await ctx["resources"].close()
        log.info("worker_stopped")

    async def on_job_start(ctx: dict[str, Any]) -> None:
        ctx["loops"].running.add(ctx["job_id"])

    async def on_job_end(ctx: dict[str, Any]) -> None:
        ctx["loops"].running.discard(ctx["job_id"])

    worker = SpriteWorker(
        functions=[
            func(
                generate_sprite,
                name=TASK_NAME,
                timeout=settings.jobs.timeout_s + ARQ_TIMEOUT_MARGIN_S,
                max_tries=ARQ_MAX_TRIES,
            )
        ],
        queue_name=settings.queue_name,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        burst=burst,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        on_job_start=on_job_start,
        on_job_end=on_job_end,
        handle_signals=handle_signals,
        job_completion_wait=int(settings.worker.shutdown_grace_s),
        max_jobs=settings.worker.max_jobs,
        keep_result=0,
        poll_delay=settings.worker.poll_delay_s,
        allow_abort_jobs=True,
        job_serializer=serialize,
        job_deserializer=deserialize,
        max_tries=ARQ_MAX_TRIES,
        log_results=False,
    )
    # The short, renewed lease described in the module docstring.
    worker.in_progress_timeout_s = settings.jobs.lease_s
    return worker
