"""One job's life on a worker: start an attempt, single flight, PixelLab, cache, outcome.

Each attempt holds a **fence** (a fresh token, ``JobStore.start_attempt``); every write it
makes is refused once another writer has moved the job on, and a refused write makes the
runner abandon the job at once (``FencedOut``). An attempt starts only with one of the
deployment's PixelLab call permits (``limits.upstream``), taken by the same script that
starts it; without one the job keeps its place in the queue. Where attempts end
(failures: ``queue.outcomes``):
    success                    -> completed, written through to the cache, slot released
    a failure                  -> retried, held back, or dead-lettered (``Outcomes.failed``)
    cancelled by a user        -> already final (the API's finishJob); the call is abandoned
    worker shutting down       -> back to the queue at once (``interrupted``, spends nothing)
    our Redis failing          -> back to the queue when Redis answers again, else the lease
                                  lapses and another attempt takes over; spends nothing
    worker killed              -> its lease lapses; the next attempt records it ``stalled``
                                  (a separate cap, ``max_stalls``)
    fenced out (lease lost)    -> abandoned; the attempt that took over owns the job
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError

from backend import metrics
from backend.cache import CachedImage, TieredCache
from backend.config import JobSettings
from backend.errors import ErrorType, FencedOut, UpstreamError
from backend.limits.estimates import QueueEstimates
from backend.limits.upstream import CallOutcome, Permit, Upstream
from backend.models import Attempt, JobRecord, JobStatus, Stage
from backend.pixellab import PixelLabClient
from backend.queue.generate import Generator
from backend.queue.outcomes import Outcomes, close_attempt
from backend.store import keys
from backend.store.inputs import InputStore
from backend.store.jobs import JobStore, Written

log = structlog.get_logger(__name__)

# How often a job waiting on another job's call checks whether that call has ended.
FLIGHT_POLL_S = 0.05
# How long a shared final outcome (invalid_request) stays readable for the waiters.
FLIGHT_OUTCOME_KEEP_MS = 60_000
# Attempts to start a job whose record keeps changing under the read (compare-and-set).
START_TRIES = 5
# How long, and how often, a paid-for image is offered to a failing cache before it is lost.
KEEP_S, KEEP_RETRY_S = 120.0, 0.25
# A job that waited on another's call and then found no permit tries again this soon.
PERMIT_RETRY_S = 0.5
# A job whose start no replica acknowledged (with replicas) tries again this soon.
UNREPLICATED_RETRY_S = 1.0


class NoPermit(Exception):
    """Every PixelLab call permit is held; the job goes back to the queue."""


@dataclass
class RunningAttempt:
    """What the worker's lease loop needs to renew an attempt, or to abandon it."""

    token: str
    task: asyncio.Task[Any]
    flight: str = ""  # the single-flight lock key while this attempt holds it
    permit: bool = True  # holds one of the deployment's PixelLab call permits
    began: float = field(default_factory=time.monotonic)


@dataclass
class JobRunner:
    jobs: JobStore
    cache: TieredCache
    pixellab: PixelLabClient
    estimates: QueueEstimates
    upstream: Upstream
    settings: JobSettings
    worker_id: str
    # The most 429s may defer one job, in all (pixellab.throttle_max_wait_s).
    throttle_max_wait_s: float = 3600.0
    # Called when a job found no call permit (busy or paused): the worker stops picking
    # jobs for a moment.
    on_no_permit: Callable[[Permit], None] = lambda permit: None
    # Where the worker finds a job's input images (None: no job carries any).
    inputs: InputStore | None = None
    # job id -> the attempt this worker runs; renewed by the worker's lease loop.
    attempts: dict[str, RunningAttempt] = field(default_factory=dict)
    # job id -> its record as read with arq's claim, for the attempt about to start.
    prefetched: dict[str, JobRecord] = field(default_factory=dict)
    # Every ``run`` until its last line, and every shielded write until it lands: what a
    # shutdown waits for before it closes the clients they use.
    _unfinished: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.generator = Generator(self.pixellab, self.inputs)
        self.outcomes = Outcomes(
            self.jobs, self.upstream, self.estimates, self.settings, self.throttle_max_wait_s
        )

    @property
    def lease_ms(self) -> int:
        return int(self.settings.lease_s * 1000)

    def leases(self) -> dict[str, tuple[str, str, bool]]:
        """``job id -> (token, flight key or "", holds a permit)`` of every running attempt."""
        return {job_id: (a.token, a.flight, a.permit) for job_id, a in self.attempts.items()}

    def hand_over(self, record: JobRecord) -> None:
        """The record read with the job's claim: its attempt starts from it, not from a read
        of its own (the start is a compare-and-set, so a stale one is read again)."""
        self.prefetched[record.job_id] = record

    def abandon(self, job_id: str) -> None:
        """Cancel an attempt that lost its fence: its PixelLab call is dropped at once."""
        attempt = self.attempts.get(job_id)
        if attempt is not None and not attempt.task.done():
            log.warning("job_abandoned", job_id=job_id, reason="fenced out")
            attempt.task.cancel()

    async def drain(self, timeout_s: float) -> None:
        """Wait for running attempts to wind up (they requeue themselves when cancelled).

        arq's ``close()`` gathers its job tasks without ``return_exceptions``, so it moves
        on to ``on_shutdown`` at the first cancelled one; clients must outlive the rest.
        """
        if self._unfinished:
            await asyncio.wait(set(self._unfinished), timeout=timeout_s)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._unfinished.add(task)
        task.add_done_callback(self._unfinished.discard)

    async def _settle(self, write: Coroutine[Any, Any, Any]) -> Any:
        """Run a write that a cancel must not interrupt, as a task the shutdown waits for.

        A second cancel (a worker told to stop twice) ends the ``shield`` early; the write
        itself carries on, and ``drain`` still waits for it.
        """
        task = asyncio.ensure_future(write)
        self._track(task)
        return await asyncio.shield(task)

    async def run(self, job_id: str) -> None:
        started = await self._start(job_id)
        if started is None:
            return
        record, token, flight = started
        task = asyncio.current_task()
        assert task is not None
        self._track(task)
        held = keys.flight(record.cache_key) if flight else ""
        attempt = self.attempts[job_id] = RunningAttempt(token, task, flight=held)
        try:
            with structlog.contextvars.bound_contextvars(
                job_id=job_id, user_id=record.user, request_id=record.request_id
            ):
                await self._attempt(record, token)
        except RedisError as exc:
            log.warning("job_store_failed", job_id=job_id, error=type(exc).__name__)
            await self.outcomes.requeue_after_store_failure(record, token)
        finally:
            self.attempts.pop(job_id, None)
            if attempt.permit:  # not used for a call: a cache hit, a skip, a shutdown
                await self._settle(self.outcomes.release_quietly(token, CallOutcome.UNUSED))
            if attempt.flight:  # taken with the start, left before a call (a stop, an outage)
                await self._settle(self._let_go_of_flight(record.cache_key, token))

    # ---- starting -------------------------------------------------------------------------

    async def _start(self, job_id: str) -> tuple[JobRecord, str, bool] | None:
        """Take the job's fence for a new attempt, and its cache key's flight lock when it is
        free (``(record, token, whether the lock is held)``); None when it is not ours to
        run."""
        for _ in range(START_TRIES):
            record = self.prefetched.pop(job_id, None) or await self.jobs.get(job_id)
            if record is None or record.status.finished:
                await self.jobs.drop_stale(job_id)
                log.info("job_skipped", job_id=job_id, reason="finished or gone")
                return None
            record = await self.outcomes.close_lost_attempt(record)
            if record is None:
                return None
            token = uuid.uuid4().hex
            now = time.time()
            attempt = Attempt(number=record.attempts + 1, started_at=now)
            started = record.model_copy(
                update={
                    "status": JobStatus.ACTIVE,
                    "stage": Stage.STARTED,
                    "progress": 5,
                    "attempts": attempt.number,
                    "history": [*record.history, attempt],
                    "started_at": record.started_at or now,
                }
            )
            submitted = started.model_copy(update={"stage": Stage.SUBMITTED, "progress": 10})
            # ``record`` keeps the revision it was read at: the start is a compare-and-set,
            # and it takes a PixelLab call permit and the flight lock in the same step.
            written, value, flight = await self.jobs.begin_attempt(
                record, started, submitted, token=token, worker_id=self.worker_id,
                lease_ms=self.lease_ms, max_calls=self.upstream.max_concurrency,
            )  # fmt: skip
            if written is Written.APPLIED:
                if attempt.number == 1:
                    metrics.JOB_WAIT.observe(max(now - record.created_at, 0.0))
                log.info("job_started", job_id=job_id, attempt=attempt.number)
                mine = submitted if flight else started
                return mine.model_copy(update={"rev": value, "fence": token}), token, flight
            if written in (Written.NO_PERMIT, Written.PAUSED):
                # The job keeps its place in the queue; this worker looks again shortly.
                permit = Permit.BUSY if written is Written.NO_PERMIT else Permit.PAUSED
                self.on_no_permit(permit)
                log.debug("job_waits_for_permit", job_id=job_id, permit=permit.name.lower())
                return None
            if written is Written.UNREPLICATED:
                await self.upstream.release(token, CallOutcome.UNUSED)
                if flight:
                    await self._let_go_of_flight(record.cache_key, token)
                # Replication lags (or a failover is under way): no call until it catches up.
                mine = started.model_copy(update={"rev": value, "fence": token})
                history = close_attempt(mine.history, time.time(), "interrupted")
                await self.outcomes.requeue(
                    mine.requeued(history=history), token, defer_s=UNREPLICATED_RETRY_S
                )
                return None
            if written is Written.FINAL:
                await self.jobs.drop_stale(job_id)
                return None
        log.warning("job_start_contended", job_id=job_id, tries=START_TRIES)
        return None

    # ---- one attempt ----------------------------------------------------------------------

    async def _attempt(self, record: JobRecord, token: str) -> None:
        began = self.attempts[record.job_id].began
        try:
            image, shared = await self._generate(record, token)
        except asyncio.CancelledError:
            # Awaited directly (not shielded): the worker waits for this before it closes
            # its clients, and a cancellation is delivered only once. A cancelled or
            # taken-over job refuses the requeue (fenced): only a shutdown requeues.
            try:
                await self.outcomes.requeue_interrupted(record, token, reason="shutdown")
            except RedisError:
                log.warning("job_left_to_lease", reason="store failed during shutdown")
            raise
        except FencedOut:
            log.warning("job_abandoned", reason="fenced out")
            return
        except NoPermit:
            # It waited on another job's call, which failed; every permit is taken now.
            history = close_attempt(record.history, time.time(), "requeued")
            queued = record.requeued(history=history)
            await self.outcomes.requeue(queued, token, defer_s=PERMIT_RETRY_S)
            return
        except RedisError:
            raise  # our own store failed, not the job: see run()
        except Exception as exc:  # every other failure is classified; none escapes
            metrics.JOB_DURATION.observe(time.monotonic() - began)
            # PixelLab has spoken: a stop must not cut this write, or the next attempt pays
            # for the same answer again. The shutdown waits for it (``drain``).
            await self._settle(self.outcomes.failed(record, token, exc))
            return
        duration = time.monotonic() - began
        metrics.JOB_DURATION.observe(duration)
        if shared:  # its own call's completion was written with the landing (``_land``)
            await self._settle(
                self.outcomes.completed(record, token, image, shared=True, duration_s=duration)
            )

    async def _generate(self, record: JobRecord, token: str) -> tuple[CachedImage, bool]:
        """The image, and whether it came from another job's call (cache or single flight).

        Single flight: one attempt per cache key holds ``sq:flight:{key}`` (a lease, renewed
        with the attempt's own) and calls PixelLab; the others wait while it is held, however
        long the call takes. When the holder lets go, a waiter finds the image in the cache,
        or the holder's final failure (shared without a call), or takes the lock itself:
        exactly one of them, since taking it is a ``SET NX``.
        """
        attempt = self.attempts[record.job_id]
        cached = await self.cache.get(record.cache_key)
        if cached is not None:
            if attempt.flight:  # taken with the start: no call after all
                attempt.flight = ""
                await self._let_go_of_flight(record.cache_key, token)
            return cached, True
        if attempt.flight:  # taken with the start (stage 10 written)
            return await self._call(record, token), False
        submitted = record.model_copy(update={"stage": Stage.SUBMITTED, "progress": 10})
        while True:
            if await self.jobs.flights.take(submitted, token, lease_ms=self.lease_ms):
                if not attempt.permit:
                    permit = await self.upstream.acquire(
                        token, record.job_id, lease_ms=self.lease_ms
                    )
                    if permit is Permit.GRANTED:
                        attempt.permit = True
                    else:
                        await self._let_go_of_flight(record.cache_key, token)
                        raise NoPermit
                return await self._call(record, token), False
            if attempt.permit:  # waiting on another job's call needs no permit
                attempt.permit = False
                await self.upstream.release(token, CallOutcome.UNUSED)
            shared = await self._wait_for_flight(record)
            if shared is not None:
                return shared, True

    async def _call(self, record: JobRecord, token: str) -> CachedImage:
        """Call PixelLab while holding the flight lock (taken with stage 10 written), keep
        the image and land the attempt.

        The call runs as a task of its own. A stop (or an abandon) that comes before
        PixelLab answers cuts the call off. One that comes once PixelLab has begun to
        answer waits for the rest, as for the image's keeping and the 90 % write: that
        answer is paid for, and cut off here it would be asked for, and paid, again by the
        next attempt. (A fenced-out attempt's writes are refused all the same.)
        """
        answering = asyncio.Event()
        call = asyncio.ensure_future(self._call_and_land(record, token, answering))
        self._track(call)
        while True:
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                if not answering.is_set():
                    call.cancel()
                    await asyncio.wait({call})
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                log.info("stop_waits_for_answer", job_id=record.job_id)

    async def _call_and_land(
        self, record: JobRecord, token: str, answering: asyncio.Event
    ) -> CachedImage:
        """The call itself, the image kept, the attempt landed; the lock let go however the
        call ends."""
        attempt = self.attempts.get(record.job_id)
        if attempt is not None:
            attempt.flight = keys.flight(record.cache_key)
        outcome: dict[str, Any] | None = None
        told = CallOutcome.UNUSED  # what the call says about PixelLab's capacity
        landed = False  # the permit and the lock went back with the 90 % write
        try:
            try:
                image = await self.generator(record, answering=answering)
                told = CallOutcome.OK
            except UpstreamError as exc:
                if exc.error_type is ErrorType.INVALID_REQUEST:
                    # The same request would fail the same way: the waiters share it.
                    outcome = {"type": exc.error_type.value, "message": exc.message}
                if exc.error_type is ErrorType.RATE_LIMITED:
                    told = CallOutcome.THROTTLED
                raise
            finally:
                if told is not CallOutcome.OK and attempt is not None and attempt.permit:
                    attempt.permit = False
                    await self._settle(self.outcomes.release_quietly(token, told))
            # Cached before anything else: the call is paid for, and a fenced-out attempt's
            # image still serves the attempt that took over.
            await self._keep(image)
            await self.outcomes.through_outage(lambda: self._land(record, token, attempt, image))
            landed = True
            return image
        finally:
            if attempt is not None:
                attempt.flight = ""
            if not landed:
                # Through an outage: raised here, a RedisError would take the place of the
                # call's own outcome, and PixelLab's final word would be asked for again.
                release = self.jobs.flights.release
                key, keep_ms = record.cache_key, FLIGHT_OUTCOME_KEEP_MS
                await self._settle(
                    self.outcomes.through_outage(
                        lambda: release(key, token, outcome=outcome, keep_ms=keep_ms)
                    )
                )

    async def _land(
        self, record: JobRecord, token: str, attempt: RunningAttempt | None, image: CachedImage
    ) -> None:
        """After a paid call, in one round trip: the permit back, stage 90, the lock free,
        the job completed.

        Each part is idempotent, so a retry through an outage does no harm. Raises
        ``FencedOut`` when the attempt lost its fence (the lock and permit go back anyway;
        the completion is refused by the same fence).
        """
        update = record.model_copy(update={"stage": Stage.RECEIVED, "progress": 90})
        duration = time.monotonic() - attempt.began if attempt is not None else 0.0
        calls = [
            self.jobs.progress_call(update, "stage", "progress", token=token),
            self.jobs.flights.release_call(
                record.cache_key, token, outcome=None, keep_ms=FLIGHT_OUTCOME_KEEP_MS
            ),
            self.outcomes.completion(update, token, image, shared=False, duration_s=duration),
        ]
        permit = attempt is not None and attempt.permit
        if permit:
            calls.append(self.upstream.release_call(token, CallOutcome.OK))
        results = await self.jobs.run_together(calls, durable=True)
        if permit and attempt is not None:
            attempt.permit = False
            self.upstream.released(CallOutcome.OK, results[3])
        if not results[0]:
            raise FencedOut("the attempt lost its fence")
        written, _ = self.jobs.finished(results[2])
        self.outcomes.log_completion(written, shared=False, duration_s=duration)

    async def _keep(self, image: CachedImage) -> None:
        """Store a paid-for image, trying again while our Redis is away (up to ``KEEP_S``):
        lost in an outage, the job would run again and pay PixelLab a second time. A cache
        that fails while the queue's Redis answers is a cache outage: the job completes
        without it (as any cache failure, it never fails a job)."""
        deadline = time.monotonic() + KEEP_S
        while not await self.cache.put(image):
            if await self.jobs.reachable() or time.monotonic() > deadline:
                log.error("image_not_kept", cache_key=image.key)
                return
            await asyncio.sleep(KEEP_RETRY_S)

    async def _let_go_of_flight(self, cache_key: str, token: str) -> None:
        """Release a flight lock no call was made under; a failing Redis lets it lapse with
        the lease instead."""
        try:
            await self.jobs.flights.release(cache_key, token, outcome=None, keep_ms=0)
        except RedisError:
            log.warning("flight_left_to_lease", cache_key=cache_key)

    async def _wait_for_flight(self, record: JobRecord) -> CachedImage | None:
        """Wait while another attempt holds the flight lock; then its image, or None to try
        taking the lock. Raises the holder's final failure, which this request shares."""
        while True:
            held, outcome = await self.jobs.flights.state(record.cache_key)
            if not held:
                break
            await asyncio.sleep(FLIGHT_POLL_S)
        image = await self.cache.get(record.cache_key)
        if image is not None:
            return image
        if outcome is not None and outcome.get("type") == ErrorType.INVALID_REQUEST.value:
            raise UpstreamError(
                str(outcome.get("message", "")), error_type=ErrorType.INVALID_REQUEST
            )
        return None
