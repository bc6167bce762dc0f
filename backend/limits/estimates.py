"""Queue figures read from Redis: waiting/active counts, state, position, ETA, Retry-After.

Durations come from the list of recent run times that ``finishJob`` keeps; worker slots from
the live workers' heartbeats. Everything is exact across API processes (nothing cached here).
"""

from __future__ import annotations

import math
import statistics
import time

import redis.asyncio as aioredis

from backend.config import LimitSettings
from backend.models import QueueState, QueueView
from backend.store import keys

DEFAULT_DURATION_S = 20.0  # PixelLab's typical generation time, until we have measurements
HEARTBEAT_STALE_S = 15.0


def queue_state(inflight: int, limits: LimitSettings) -> QueueState:
    if inflight >= limits.queue_capacity:
        return QueueState.CRITICAL
    if inflight >= limits.warning_at:
        return QueueState.WARNING
    return QueueState.OK


def eta_s(position: int, active: int, slots: int, median_duration_s: float) -> float:
    """Wait of the job at 1-based ``position`` among waiting ones.

    Free slots take the first waiting jobs at once; the rest are served ``slots`` at a time,
    each round taking about the median run time.
    """
    behind_free = position - max(slots - active, 0)
    if behind_free <= 0:
        return 0.0
    return round(math.ceil(behind_free / max(slots, 1)) * median_duration_s, 1)


class QueueEstimates:
    def __init__(self, redis: aioredis.Redis, limits: LimitSettings, *, queue_name: str) -> None:
        self._redis = redis
        self._limits = limits
        self._queue_name = queue_name

    async def snapshot(self) -> tuple[int, int, int, float]:
        """(inflight, active, live worker slots, median duration) in one round trip."""
        cutoff_ms = int((time.time() - HEARTBEAT_STALE_S) * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.INFLIGHT)
            pipe.zcard(keys.ACTIVE)
            pipe.lrange(keys.DURATIONS, 0, 99)
            pipe.zrangebyscore(keys.WORKERS, cutoff_ms, "+inf")
            inflight, active, durations, workers = await pipe.execute()
        slots = 0
        if workers:
            async with self._redis.pipeline(transaction=False) as pipe:
                for worker_id in workers:
                    pipe.hget(keys.worker(worker_id.decode()), "concurrency")
                slots = sum(int(c or 0) for c in await pipe.execute())
        median = statistics.median(float(d) for d in durations) if durations else DEFAULT_DURATION_S
        return int(inflight), int(active), slots, median

    async def queue_view(self) -> QueueView:
        inflight, active, slots, median = await self.snapshot()
        waiting = max(inflight - active, 0)
        return QueueView(
            waiting=waiting,
            active=active,
            capacity=self._limits.queue_capacity,
            state=queue_state(inflight, self._limits),
            estimated_wait_s=eta_s(waiting + 1, active, slots, median),
        )

    async def position(self, job_id: str) -> tuple[int | None, float | None]:
        """1-based place among waiting jobs and its estimated wait; (None, None) if not queued."""
        rank = await self._redis.zrank(self._queue_name, job_id)
        if rank is None:
            return None, None
        _, active, slots, median = await self.snapshot()
        # Running jobs stay in arq's queue until they end, and they are the oldest entries.
        position = max(int(rank) - active, 0) + 1
        return position, eta_s(position, active, slots, median)

    async def retry_after_s(self, *, user_limit: bool) -> int:
        """When a rejected client may usefully try again."""
        inflight, _, slots, median = await self.snapshot()
        if user_limit:
            return max(1, math.ceil(median))
        overflow = max(inflight - self._limits.queue_capacity, 0) + 1
        return max(1, math.ceil(overflow / max(slots, 1) * median))
