"""Queue figures read from Redis: waiting/active counts, state, ETA, Retry-After.

Inputs, all read from Redis on every call, so every API process sees the same figures:
    D  median of the last 100 completed run times (``sq:durations``, kept by ``finishJob``),
       ``DEFAULT_DURATION_S`` until there is any
    S  worker slots: the summed ``max_jobs`` of workers with a heartbeat in the last
       ``HEARTBEAT_STALE_S`` seconds, at most the PixelLab call permits there are now
    A  jobs running now (``sq:active``);  I  jobs queued + running (``sq:inflight``)

Formulas (pure functions below, unit-tested):
    ETA at 1-based waiting position p   0 if p <= S - A (a free slot takes it at once),
                                         else ceil((p - max(S - A, 0)) / max(S, 1)) * D:
                                         the jobs ahead are served S at a time, one run
                                         time a round (no live worker counts as one slot)
    Retry-After, queue_full              one job must end to free a global slot; with
                                         R = max(min(S, I), 1) jobs running, one ends on
                                         average every D / R s: ceil((I - capacity + 1) * D / R)
    Retry-After, user_limit              the soonest any of the user's own jobs ends: a
                                         running one after max(D - time it has run, D / 4)
                                         (past its median a job gives no better clue), a
                                         waiting one after its ETA + D; D if no user given
Every Retry-After is clamped to [1, ``MAX_RETRY_AFTER_S``]: past ten minutes an estimate is
too rough to be worth more than a periodic re-check.

A waiting job's own position and ETA are not computed here: the scripts that place it
(``admitJob``, then ``announcePositions`` every interval, see ``limits.positions``) store
them in its record, with the same ETA formula in ``lua/include/place.lua``.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import NamedTuple

import redis.asyncio as aioredis

from backend.config import LimitSettings
from backend.limits.upstream import effective_limit
from backend.models import QueueState, QueueView
from backend.store import keys

DEFAULT_DURATION_S = 20.0  # PixelLab's typical generation time, until we have measurements
HEARTBEAT_STALE_S = 15.0
DURATION_SAMPLES = 100
MAX_RETRY_AFTER_S = 600


def queue_state(inflight: int, limits: LimitSettings) -> QueueState:
    if inflight >= limits.queue_capacity:
        return QueueState.CRITICAL
    if inflight >= limits.warning_at:
        return QueueState.WARNING
    return QueueState.OK


def eta_s(
    position: int, active: int, slots: int, median_duration_s: float, defer_s: float = 0.0
) -> float:
    """Wait of the job at 1-based ``position`` among waiting ones (see the module docstring),
    and never less than ``defer_s``, the time a deferred job must still wait to start."""
    wait = 0.0
    behind_free = position - max(slots - active, 0)
    if behind_free > 0:
        wait = math.ceil(behind_free / max(slots, 1)) * median_duration_s
    return round(max(wait, defer_s), 1)


def clamp_retry_after(seconds: float) -> int:
    return min(max(1, math.ceil(seconds)), MAX_RETRY_AFTER_S)


def queue_full_retry_after_s(
    inflight: int, capacity: int, slots: int, median_duration_s: float
) -> int:
    """Seconds until enough jobs end for one more to fit under ``capacity``."""
    overflow = max(inflight - capacity, 0) + 1
    running = max(min(slots, inflight), 1)
    return clamp_retry_after(overflow * median_duration_s / running)


def user_job_ends_in_s(
    *, running_for_s: float | None, eta_s: float | None, median_duration_s: float
) -> float:
    """When one of a user's jobs is likely to end: running for a while, or waiting ``eta_s``."""
    if running_for_s is not None:
        return max(median_duration_s - running_for_s, median_duration_s / 4)
    if eta_s is not None:
        return eta_s + median_duration_s
    return median_duration_s


class Snapshot(NamedTuple):
    inflight: int
    active: int
    slots: int
    median_duration_s: float


class Rates(NamedTuple):
    """The slow-moving inputs of an ETA: worker slots and the median run time."""

    slots: int
    median_duration_s: float


RATES_TTL_S = 1.0  # how long one process reuses them on the submit path


class QueueEstimates:
    def __init__(
        self, redis: aioredis.Redis, limits: LimitSettings, *, max_concurrency: int = 10**6
    ) -> None:
        self._redis = redis
        self._limits = limits
        self._max_concurrency = max_concurrency
        self._rates: tuple[float, Rates] | None = None  # (monotonic time of the read, rates)

    async def snapshot(self) -> Snapshot:
        """The inputs of every estimate, in one round trip (two when workers are alive)."""
        cutoff_ms = int((time.time() - HEARTBEAT_STALE_S) * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.INFLIGHT)
            pipe.zcard(keys.ACTIVE)
            pipe.lrange(keys.DURATIONS, 0, DURATION_SAMPLES - 1)
            pipe.zrangebyscore(keys.WORKERS, cutoff_ms, "+inf")
            pipe.hget(keys.UPSTREAM, "limit")
            inflight, active, durations, workers, permits = await pipe.execute()
        slots = 0
        if workers:
            async with self._redis.pipeline(transaction=False) as pipe:
                for worker_id in workers:
                    pipe.hget(keys.worker(worker_id.decode()), "concurrency")
                slots = sum(int(c or 0) for c in await pipe.execute())
            # No more jobs run at once than there are PixelLab call permits (fewer while
            # PixelLab throttles us).
            slots = min(slots, effective_limit(permits, self._max_concurrency))
        median = statistics.median(float(d) for d in durations) if durations else DEFAULT_DURATION_S
        snap = Snapshot(int(inflight), int(active), slots, median)
        self._rates = (time.monotonic(), Rates(slots, median))
        return snap

    async def rates(self) -> Rates:
        """Slots and median run time, at most ``RATES_TTL_S`` old: a new job's ETA needs no
        fresher figures, and the submit path saves the round trips."""
        if self._rates is not None and time.monotonic() - self._rates[0] < RATES_TTL_S:
            return self._rates[1]
        snap = await self.snapshot()
        return Rates(snap.slots, snap.median_duration_s)

    async def queue_view(self) -> QueueView:
        snap = await self.snapshot()
        waiting = max(snap.inflight - snap.active, 0)
        return QueueView(
            waiting=waiting,
            active=snap.active,
            capacity=self._limits.queue_capacity,
            state=queue_state(snap.inflight, self._limits),
            estimated_wait_s=eta_s(waiting + 1, snap.active, snap.slots, snap.median_duration_s),
        )

    async def retry_after_s(self, *, user_limit: bool, user: str | None = None) -> int:
        """When a rejected client may usefully try again (formulas in the module docstring)."""
        snap = await self.snapshot()
        if not user_limit:
            return queue_full_retry_after_s(
                snap.inflight, self._limits.queue_capacity, snap.slots, snap.median_duration_s
            )
        if user is None:
            return clamp_retry_after(snap.median_duration_s)
        return clamp_retry_after(await self._user_slot_frees_in_s(user, snap))

    async def _user_slot_frees_in_s(self, user: str, snap: Snapshot) -> float:
        job_ids = [j.decode() for j in await self._redis.zrange(keys.user_inflight(user), 0, -1)]
        if not job_ids:
            return 0.0  # freed since the script said no: the client may retry at once
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.zscore(keys.ACTIVE, job_id)
                pipe.hget(keys.job(job_id), "estimated_wait_s")
            replies = await pipe.execute()
        now_ms = time.time() * 1000
        soonest = math.inf
        for started_ms, stored_eta in zip(replies[::2], replies[1::2], strict=True):
            running_for = None if started_ms is None else max(now_ms - started_ms, 0) / 1000
            eta = float(stored_eta) if stored_eta and started_ms is None else None
            ends = user_job_ends_in_s(
                running_for_s=running_for, eta_s=eta, median_duration_s=snap.median_duration_s
            )
            soonest = min(soonest, ends)
        return soonest
