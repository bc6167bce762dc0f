"""Keeps each waiting job's place current, in its record and in its event stream.

A job's position changes when a job ahead of it starts or is cancelled, and its wait when
workers come and go or run times drift. Those changes are pushed rather than computed on
every read: once per ``SPRITEQ_JOBS__POSITION_INTERVAL_S``, one process (whichever claims
``sq:positions-tick`` for that interval; every API process and worker tries) runs the
``announcePositions`` script, which walks the queue in order and, for each waiting job whose
place changed, stores it and appends a ``progress`` event, atomically. So an SSE client
sees its job move up, a polling client reads the same figures from the record, and a poll
costs one read. Near the head of the queue a place is at most one interval old.

The walk covers at most the first ``WALK_LIMIT`` queue entries and sends at most
``RULES.max_events`` events, from the head of the queue; the default capacity (500) is
within both. A deployment that raises the capacity past them keeps the last announced place
(an overestimate) for jobs further back until they come within reach, rather than spending
more Redis time and fan-out every interval.
"""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis
import structlog

from backend import metrics
from backend.limits.estimates import QueueEstimates
from backend.store import keys
from backend.store.jobs import Announcement, JobStore, PlaceRules

log = structlog.get_logger(__name__)

RULES = PlaceRules(
    # A wait that moves less than 1 s or 10 % keeps its last announced value: the median run
    # time drifts a little after every completion.
    min_wait_change_s=1.0,
    min_wait_change_ratio=0.1,
    # Every move within the first 100 places; further back, a move of 5 % (a job at place
    # 2,000 hears of every 100th start), or the wait changing by the rule above.
    every_move_up_to=100,
    min_move_ratio=0.05,
    # The default capacity: a queue within it is always announced whole, and a longer one
    # draining fast costs no more than that (docs/benchmarks.md: a 3,000-job drain lost
    # ~10 % of its rate without this budget).
    max_events=500,
)
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
        if not await self._jobs.queue_length():
            return Announcement(0, 0)  # nothing waits: no figures to read, no walk
        snap = await self._estimates.snapshot()
        result = await self._jobs.announce_positions(
            slots=snap.slots,
            median_duration_s=snap.median_duration_s,
            limit=min(self._capacity, WALK_LIMIT),
            rules=RULES,
        )
        if result.announced:
            metrics.POSITION_EVENTS.inc(result.announced)
            log.debug("positions_announced", waiting=result.waiting, announced=result.announced)
        return result
