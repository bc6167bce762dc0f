"""arq's worker, hooked (``SpriteWorker``): kept alive through a Redis outage, fenced
attempts (arq's own post-run writes left to our scripts), pickup in one round trip, and
woken by ``sq:wake`` instead of polling. ``queue.worker`` builds the process around it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import structlog
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime, timestamp_ms
from arq.worker import Function, Worker
from redis.exceptions import RedisError

from backend.limits.upstream import Permit
from backend.queue.wakeups import ABORT, POLL, REQUEUE, Wakeups
from backend.store.claims import Claim, claim_job

log = structlog.get_logger(__name__)

PERMIT_WAIT_S = 0.1  # how long a worker that found no call permit picks no job
PAUSED_WAIT_S = 1.0  # the same while PixelLab calls are paused
REDIS_RETRY_S = 1.0


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
      entries only when the job cannot run.
    - Pickup in one round trip a job: ``start_jobs`` claims with one script that also reads
      what arq's ``run_job`` would read first, and ``run_job`` runs the task from it.
    - Woken, not polling: between polls the loop waits on ``sq:wake`` (``_until_work``),
      claims a job the message names at once, with no read of the queue (``_start_named``),
      and reads the next deferred job and arq's abort set only when a message says they
      changed (``queue.wakeups``).
    ``tests/integration/test_arq_hooks.py`` fails loudly if arq's internals change under
    these hooks.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claims: dict[str, Claim] = {}  # job id -> its claim, until its run begins

    _redis_down = False
    _permit_wait_until = 0.0
    # Whether the queue may hold due jobs this worker has not started: its last poll stopped
    # for want of a slot or a permit, or read as many ids as a poll reads.
    _more_due = True
    _next_due_ms: float | None = None  # the next deferred job's score, as last read
    _look_for_deferred = True  # read it again at the next wait
    _next_abort_check = 0.0
    _skip_poll = False  # the next iteration reads no queue (``_start_named``)
    _picking_stopped = False  # a stop turned arq's ``allow_pick_jobs`` off
    _idle_poll_s = 2.0

    def wait_for_permit(self, permit: Permit) -> None:
        """A job found no PixelLab call permit: pick no job for a moment (longer while calls
        are paused), so jobs keep their places in the queue and Redis is not asked again
        at every poll."""
        wait_s = PAUSED_WAIT_S if permit is Permit.PAUSED else PERMIT_WAIT_S
        self._permit_wait_until = time.monotonic() + wait_s
        self._more_due = True  # the job is still due

    def slot_freed(self) -> None:
        """A job ended: look at the queue again at once if the last poll left due jobs
        behind; otherwise new work comes with a wake-up."""
        wakeups: Wakeups | None = self.ctx.get("wakeups")
        if wakeups is not None and self._more_due:
            wakeups.set()

    async def _poll_iteration(self) -> None:
        self._end_if_stopped()
        try:
            if self._redis_down and "loops" in self.ctx:
                await self.ctx["loops"].recovered()
            if self.job_counter >= self.max_jobs:
                self._more_due = True  # no look at the queue this time
            await self._poll_or_not()
            self._redis_down = False
            await self._until_work()
        except (RedisError, OSError) as exc:
            self._end_if_stopped()
            if not self._redis_down:
                log.warning("worker_redis_unavailable", error=type(exc).__name__)
            self._redis_down = True
            await asyncio.sleep(REDIS_RETRY_S)

    async def _poll_or_not(self) -> None:
        """arq's poll iteration, without its read of the queue when the last wake-up named
        every job there was to start (``_start_named``); its other steps (arq's abort set,
        finished tasks, heartbeat) run either way."""
        skip, self._skip_poll = self._skip_poll, False
        wakeups: Wakeups | None = self.ctx.get("wakeups")
        if not skip or not self.allow_pick_jobs:
            if wakeups is not None:
                wakeups.take_jobs()  # the read below finds them
                wakeups.take(POLL)
            await super()._poll_iteration()
            return
        self.allow_pick_jobs = False  # arq's switch for its read of the queue
        try:
            await super()._poll_iteration()
        finally:
            # A stop that came meanwhile (arq's wait for completion) keeps it off.
            self.allow_pick_jobs = not self._picking_stopped

    def handle_sig_wait_for_completion(self, signum: signal.Signals) -> None:
        self._picking_stopped = True
        super().handle_sig_wait_for_completion(signum)

    def _end_if_stopped(self) -> None:
        """End the poll loop if a stop cancelled it, even when the cancel never reached the
        loop as a ``CancelledError``. It once was swallowed somewhere within an iteration
        (the line is not pinned down: not by our handler of Redis and OS errors, a traced
        run showed), and the stopped worker polled on and never exited (chaos run, 3 runs
        in 12). Checked at the start of every iteration and in that handler, so a
        swallowed stop costs at most one wait (``idle_poll_s``)."""
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            log.warning("worker_stop_was_swallowed")
            raise asyncio.CancelledError

    async def _until_work(self) -> None:
        """After a poll that left nothing due to start (or with every slot busy), wait for a
        wake-up, the next deferred job, or ``idle_poll_s``, instead of polling again at once."""
        wakeups: Wakeups | None = self.ctx.get("wakeups")
        if wakeups is None or self.burst:
            return
        now = time.monotonic()
        has_slot = self.job_counter < self.max_jobs
        waiting_for_permit = now < self._permit_wait_until
        if self._more_due and has_slot and not waiting_for_permit:
            return  # due jobs were left behind: look again at once
        timeout = self._idle_poll_s
        if waiting_for_permit:
            timeout = min(timeout, self._permit_wait_until - now)
        elif has_slot:
            due_ms = await self._next_deferred_ms(wakeups)
            if due_ms is not None:
                timeout = min(timeout, max(due_ms - timestamp_ms(), 0) / 1000)
        if not await wakeups.wait(timeout):
            self._look_for_deferred = True  # the fallback: nothing is taken on trust
            return
        await self._start_named(wakeups)

    async def _start_named(self, wakeups: Wakeups) -> None:
        """Claim the jobs the wake-up named, at once, without reading the queue: a poll
        would cost a round trip first and, within arq's poll interval of the last one, a
        sleep for the rest of it. Only a worker that left no due job behind waits for a
        wake-up, so the named jobs are all the new work, unless a message said otherwise
        (``POLL``: unnamed work, a requeue, a freed permit) or a claim stopped short (no
        slot, no permit): then the next iteration polls as arq does. Another worker's claim
        of the same job costs this one a refused claim, in place of the poll it saves."""
        named = wakeups.take_jobs()
        if not named or not self.allow_pick_jobs or self.job_counter >= self.max_jobs:
            return  # (a stop turns allow_pick_jobs off: no new job while it waits for its own)
        more_due = self._more_due
        await self.start_jobs([job_id.encode() for job_id in named])
        self._more_due = more_due or self._more_due
        self._skip_poll = not wakeups.take(POLL) and not self._more_due

    async def _next_deferred_ms(self, wakeups: Wakeups) -> float | None:
        """When the next deferred job is due. Read from the queue only when that may have
        changed: after a ``requeue`` message, once the last one read is due, or at the
        fallback; admissions never defer a job."""
        stale = self._next_due_ms is not None and self._next_due_ms <= timestamp_ms()
        if wakeups.take(REQUEUE) or stale or self._look_for_deferred:
            self._look_for_deferred = False
            due = await self.pool.zrangebyscore(
                self.queue_name, f"({timestamp_ms()}", "+inf", start=0, num=1, withscores=True
            )
            self._next_due_ms = due[0][1] if due else None
        return self._next_due_ms

    async def _cancel_aborted_jobs(self) -> None:
        """arq's read of its abort set, only while this worker runs jobs and after an
        ``abort`` message (or every ``idle_poll_s``, for a message missed; the lease loop
        abandons a cancelled job's attempt too)."""
        if not self.job_tasks:
            return
        wakeups: Wakeups | None = self.ctx.get("wakeups")
        now = time.monotonic()
        if wakeups is not None and not wakeups.take(ABORT) and now < self._next_abort_check:
            return
        self._next_abort_check = now + self._idle_poll_s
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
        start (``JobRunner.hand_over``) and what arq's ``run_job`` reads first (see
        ``run_job``). The rest is arq's own loop, step for step: a semaphore slot and the job
        counter per job, ``run_job`` in a task that gives both back when it ends.
        """
        if time.monotonic() < self._permit_wait_until:
            self._more_due = True
            return
        scripts = self.ctx["resources"].scripts
        lock_ms = int(self.in_progress_timeout_s * 1000)
        self._more_due = len(job_ids) >= self.queue_read_limit  # perhaps more beyond
        for job_id_b in job_ids:
            job_id = job_id_b.decode()
            if job_id in self.tasks:
                # Jobs this worker runs stay in arq's queue until they end: no round trip.
                continue
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                self._more_due = True
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
            self._claims[job_id] = claim
            task = self.loop.create_task(self.run_job(job_id, claim.score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's ``run_job``, from what ``claimJob`` read in the claim's round trip.

        arq's own begins with a round trip (read the payload, count the try, clear an abort
        request); the claim did all three. The rest is arq's run of a task like ours, which
        writes its own outcomes, never raises (every failure is classified) and keeps no
        result: a context, ``on_job_start``, the task in ``job_tasks`` (where an abort finds
        it) under the function's timeout, ``on_job_end`` (arq's ``finish_job`` does nothing
        here, see the class docstring). A job that cannot run goes to ``finish_failed_job``,
        as in arq. ``tests/integration/test_arq_hooks.py`` checks arq's steps are still these.
        """
        claim = self._claims.pop(job_id, None)
        if claim is None:  # not claimed by start_jobs: arq's own way
            await super().run_job(job_id, score)
            return
        runnable = self._runnable(job_id, claim)
        if runnable is None:
            self.jobs_failed += 1
            await asyncio.shield(self.finish_failed_job(job_id, None))
            return
        function, args, kwargs, enqueued_ms = runnable
        ctx = {**self.ctx, "job_id": job_id, "job_try": claim.tries,
               "enqueue_time": ms_to_datetime(enqueued_ms), "score": score}  # fmt: skip
        if self.on_job_start:
            await self.on_job_start(ctx)
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        task = self.loop.create_task(function.coroutine(ctx, *args, **kwargs))
        self.job_tasks[job_id] = task
        try:
            await asyncio.wait_for(task, timeout_s)
            self.jobs_complete += 1
        except asyncio.CancelledError:  # a stop (it requeued itself) or an abort
            if job_id in self.aborting_tasks:
                self.aborting_tasks.discard(job_id)
                self.jobs_failed += 1
            else:
                self.jobs_retried += 1
        except Exception:
            log.exception("job_task_failed", job_id=job_id)
            self.jobs_failed += 1
        finally:
            del self.job_tasks[job_id]
        if self.on_job_end:
            await self.on_job_end(ctx)

    def _runnable(
        self, job_id: str, claim: Claim
    ) -> tuple[Function, tuple[Any, ...], dict[str, Any], int] | None:
        """The function, arguments and enqueue time of a claimed job; None (with the reason
        logged) when arq would not run it."""
        if claim.payload is None:
            log.warning("job_expired", job_id=job_id)
            return None
        if claim.aborted:
            log.info("job_aborted_before_start", job_id=job_id)
            return None
        try:
            name, args, kwargs, _, enqueued_ms = deserialize_job_raw(
                claim.payload, deserializer=self.job_deserializer
            )
        except SerializationError:
            log.exception("job_payload_unreadable", job_id=job_id)
            return None
        function = self.functions.get(name)
        if not isinstance(function, Function):
            log.warning("job_function_unknown", job_id=job_id, function=name)
            return None
        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if claim.tries > max_tries:
            log.warning("job_past_arqs_tries", job_id=job_id, tries=claim.tries)
            return None
        return function, args, kwargs, enqueued_ms
