"""The arq worker: resources opened in ``on_startup``, closed in ``on_shutdown``.

Besides arq's own loop, each worker keeps six small background loops:
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
import signal
import socket
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import httpx
import structlog
from arq.utils import timestamp_ms
from arq.worker import Worker, func
from redis.exceptions import RedisError

from backend.aio import cancel_and_wait, run_every
from backend.config import Settings
from backend.errors import UpstreamError
from backend.limits.reconciler import Reconciler
from backend.limits.upstream import Permit
from backend.pixellab import PixelLabClient, create_http_client
from backend.queue.producer import TASK_NAME
from backend.queue.resources import Resources, open_resources
from backend.queue.runner import JobRunner
from backend.queue.serializer import deserialize, serialize
from backend.queue.tasks import generate_sprite
from backend.queue.wakeups import Wakeups
from backend.queue.webhooks import WebhookDeliverer
from backend.store import keys
from backend.store.claims import claim_job
from backend.store.connect import arq_settings

log = structlog.get_logger(__name__)

# arq's own timeout is only a backstop: ours bounds the PixelLab call (``timeout_s``), and a
# job waiting on another job's call (single flight) may wait as long as that call's lease
# lives, so a whole attempt has no fixed bound of its own.
ARQ_TIMEOUT_S = 7 * 24 * 3600
# Tries are counted by us (attempt history, stalls); arq's counter is only a backstop.
ARQ_MAX_TRIES = 1000
RECONCILE_EVERY_S = 30.0
PERMIT_WAIT_S = 0.1  # how long a worker that found no call permit picks no job
PAUSED_WAIT_S = 1.0  # the same while PixelLab calls are paused
PROBE_TIMEOUT_S = 10.0
REDIS_RETRY_S = 1.0


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
        interval_ms = int(self.settings.pixellab.probe_interval_s * 1000)
        if not await self.resources.redis.set(
            keys.PROBE_TICK, self.worker_id, nx=True, px=interval_ms
        ):
            return
        try:
            usd = await self.runner.pixellab.balance_usd(timeout_s=PROBE_TIMEOUT_S)
        except UpstreamError as exc:
            log.info("upstream_probe_failed", error_type=exc.error_type.value)
            return
        await upstream.record_balance(usd)
        if usd > 0:
            await upstream.resume(by="probe")
        else:
            log.info("upstream_probe_no_credit", usd=usd)

    async def read_balance(self) -> None:
        """Read ``GET /balance`` once per interval across the deployment (a shared tick key)
        and record it for the admin page; a failed read keeps the last figure."""
        interval_ms = int(self.settings.pixellab.balance_interval_s * 1000)
        if not await self.resources.redis.set(
            keys.BALANCE_TICK, self.worker_id, nx=True, px=interval_ms
        ):
            return
        try:
            usd = await self.runner.pixellab.balance_usd(timeout_s=PROBE_TIMEOUT_S)
        except UpstreamError as exc:
            log.info("balance_read_failed", error_type=exc.error_type.value)
            return
        await self.resources.upstream.record_balance(usd)

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


class SpriteWorker(Worker):
    """arq's worker, kept alive through a Redis outage, with its clean-up handed to us.

    - arq lets a Redis error escape its poll loop, which ends the worker. Here the loop logs
      it, waits, and polls again, so a worker recovers by itself when Redis returns; its
      first acts then are a heartbeat, a pause on takeovers for one lease and a renewal of
      its leases (``WorkerLoops.recovered``), so its attempts keep their paid calls.
    - After a job, arq deletes its queue entry and payload (or re-scores the entry for a
      retry) without checking who owns the job now. Such a late write could re-create a
      cancelled job's queue entry or delete the entry of an admin's DLQ retry under the same
      id. Our scripts move the job through arq's keys atomically with its state and fence
      (``finishJob``, ``requeueJob``, ``dropStale``), so ``finish_job`` does nothing here and
      ``finish_failed_job`` (a job arq found expired or aborted before start) drops arq's
      entries only when the job cannot run. ``tests/integration/test_arq_hooks.py`` fails
      loudly if arq's internals change under these hooks.
    """

    _redis_down = False
    _permit_wait_until = 0.0
    _started_any = False  # whether the last poll started a job
    _idle_poll_s = 2.0

    def wait_for_permit(self, permit: Permit) -> None:
        """A job found no PixelLab call permit: pick no job for a moment (longer while calls
        are paused), so jobs keep their places in the queue and Redis is not asked again
        at every poll."""
        wait_s = PAUSED_WAIT_S if permit is Permit.PAUSED else PERMIT_WAIT_S
        self._permit_wait_until = time.monotonic() + wait_s

    async def _poll_iteration(self) -> None:
        try:
            if self._redis_down and "loops" in self.ctx:
                await self.ctx["loops"].recovered()
            self._started_any = False
            await super()._poll_iteration()
            self._redis_down = False
            await self._until_work()
        except (RedisError, OSError) as exc:
            if not self._redis_down:
                log.warning("worker_redis_unavailable", error=type(exc).__name__)
            self._redis_down = True
            await asyncio.sleep(REDIS_RETRY_S)

    async def _until_work(self) -> None:
        """After a poll that started nothing (or with every slot busy), wait for a wake-up,
        the next deferred job, or ``idle_poll_s``, instead of polling again at once."""
        wakeups: Wakeups | None = self.ctx.get("wakeups")
        if wakeups is None or self.burst:
            return
        if self._started_any and self.job_counter < self.max_jobs:
            return  # it found work: there may be more
        now = time.monotonic()
        timeout = self._idle_poll_s
        if now < self._permit_wait_until:
            timeout = min(timeout, self._permit_wait_until - now)
        elif self.job_counter < self.max_jobs:
            due = await self.pool.zrangebyscore(
                self.queue_name, f"({timestamp_ms()}", "+inf", start=0, num=1, withscores=True
            )
            if due:
                timeout = min(timeout, max(due[0][1] - timestamp_ms(), 0) / 1000)
        await wakeups.wait(timeout)

    async def _cancel_aborted_jobs(self) -> None:
        if self.job_tasks:  # nothing to abort on an idle worker: no read of arq's abort set
            await super()._cancel_aborted_jobs()

    async def finish_job(self, job_id: str, *args: Any, **kwargs: Any) -> None:
        """Nothing: the job's own scripts already moved it through arq's keys."""

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        if "resources" in self.ctx:
            self.ctx["runner"].prefetched.pop(job_id, None)  # its attempt never starts
            await self.ctx["resources"].jobs.drop_stale(job_id)

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
        """arq's ``start_jobs`` with its claim made one script (``claimJob``).

        arq claims each job with a WATCH, an EXISTS, a ZSCORE and a MULTI: four round trips
        per job. Here one, which also reads our record of the job for the attempt about to
        start (``JobRunner.hand_over``). The rest is arq's own loop, step for step: a
        semaphore slot and the job counter per job, ``run_job`` in a task that gives both
        back when it ends.
        """
        if time.monotonic() < self._permit_wait_until:
            return
        scripts = self.ctx["resources"].scripts
        lock_ms = int(self.in_progress_timeout_s * 1000)
        before = self.job_counter
        for job_id_b in job_ids:
            job_id = job_id_b.decode()
            if job_id in self.tasks:
                # Jobs this worker runs stay in arq's queue until they end: no round trip.
                continue
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                break
            self.job_counter += 1
            try:
                claim = await claim_job(scripts, self.queue_name, job_id, lock_ms=lock_ms)
            except BaseException:
                self.job_counter -= 1
                self.sem.release()
                raise
            if claim is None:
                self.job_counter -= 1
                self.sem.release()
                continue
            if claim.record is not None:
                self.ctx["runner"].hand_over(claim.record)
            task = self.loop.create_task(self.run_job(job_id, claim.score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        self._started_any = self.job_counter > before


def build_worker(settings: Settings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    async def on_startup(ctx: dict[str, Any]) -> None:
        resources = await open_resources(settings)
        http = create_http_client(settings.pixellab)
        worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        runner = JobRunner(
            jobs=resources.jobs,
            cache=resources.cache,
            pixellab=PixelLabClient(http),
            estimates=resources.estimates,
            upstream=resources.upstream,
            settings=settings.jobs,
            worker_id=worker_id,
            throttle_max_wait_s=settings.pixellab.throttle_max_wait_s,
            on_no_permit=worker.wait_for_permit,
            inputs=resources.inputs,
        )
        loops = WorkerLoops(
            resources, runner, max_jobs=settings.worker.max_jobs, worker_id=worker_id
        )
        wakeups = Wakeups(resources.redis)
        hooks_http = httpx.AsyncClient(follow_redirects=False)
        deliverer = WebhookDeliverer(resources.jobs, resources.webhooks, hooks_http,
                                     settings.webhooks)  # fmt: skip
        wakeups.add_listener(deliverer.wake)
        wakeups.start()
        ctx.update(resources=resources, http=http, loops=loops, runner=runner, wakeups=wakeups,
                   hooks_http=hooks_http)  # fmt: skip
        await loops.heartbeat()
        loops.start()
        loops.add_task(deliverer.run(), name="webhooks")
        log.info("worker_started", worker_id=loops.worker_id, max_jobs=loops.max_jobs)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if "loops" in ctx:
            await ctx["runner"].drain(timeout_s=10)
            await ctx["wakeups"].stop()
            await ctx["loops"].stop()
            await ctx["http"].aclose()
            await ctx["hooks_http"].aclose()
            await ctx["resources"].close()
        log.info("worker_stopped")

    async def on_job_start(ctx: dict[str, Any]) -> None:
        ctx["loops"].running.add(ctx["job_id"])

    async def on_job_end(ctx: dict[str, Any]) -> None:
        ctx["loops"].running.discard(ctx["job_id"])
        ctx["wakeups"].set()  # a slot freed: look at the queue again

    worker = SpriteWorker(
        functions=[
            func(
                generate_sprite,
                name=TASK_NAME,
                timeout=ARQ_TIMEOUT_S,
                max_tries=ARQ_MAX_TRIES,
            )
        ],
        queue_name=settings.queue_name,
        redis_settings=arq_settings(settings.redis_url),
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
    worker._idle_poll_s = settings.worker.idle_poll_s
    return worker
