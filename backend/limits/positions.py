"""Keeps each waiting job's place current, in its record and in its event stream.

A job's position changes when a job ahead of it starts or is cancelled, and its wait when
workers come and go or run times drift. Those changes are pushed rather than computed on
every read: once per ``SPRITEQ_JOBS__POSITION_INTERVAL_S``, one process (whichever claims
``sq:positions-tick`` for that interval; every API process and worker tries) runs the
``announcePositions`` script, which walks the queue in order and, for each waiting job whose
place changed, stores it and appends a ``progress`` event, atomically. So an SSE client
sees its job move up, a polling client reads the same figures from the record, and a poll
costs one read. A place is at most one interval old.

The walk covers the first ``WALK_LIMIT`` queue entries (the default capacity is 500). A
deployment that raises the capacity past that keeps the admission-time place for the jobs
further back, rather than spending more Redis time every interval.
"""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis
import structlog

from backend import metrics
from backend.limits.estimates import QueueEstimates
from backend.store import keys
from backend.store.jobs import Announcement, JobStore

log = structlog.get_logger(__name__)

# A wait that moves less than both of these keeps its last announced value.
MIN_WAIT_CHANGE_S = 1.0
MIN_WAIT_CHANGE_RATIO = 0.1
WALK_LIMIT = 10_000


class PositionAnnouncer:
    def __init__(
        self,
        redis: aioredis.Redis,
        jobs: JobStore,
        estimates: QueueEstimates,
        *,
        capacity: int,
        interval_s: float,
    ) -> None:
        self._redis = redis
        self._jobs = jobs
        self._estimates = estimates
        self._capacity = capacity
        self.interval_s = interval_s
        self._owner = uuid.uuid4().hex

    async def run_once(self) -> Announcement | None:
        """Announce, unless another process already has this interval (then None)."""
        claimed = await self._redis.set(
            keys.POSITIONS_TICK, self._owner, nx=True, px=max(int(self.interval_s * 1000), 1)
        )
        if not claimed:
            return None
        snap = await self._estimates.snapshot()
        result = await self._jobs.announce_positions(
            slots=snap.slots,
            median_duration_s=snap.median_duration_s,
            limit=min(self._capacity, WALK_LIMIT),
            min_change_s=MIN_WAIT_CHANGE_S,
            min_change_ratio=MIN_WAIT_CHANGE_RATIO,
        )
        if result.announced:
            metrics.POSITION_EVENTS.inc(result.announced)
            log.debug("positions_announced", waiting=result.waiting, announced=result.announced)
        return result
