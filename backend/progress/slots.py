"""Open SSE streams per user, counted exactly across API processes, so a cap can be enforced.

Each open stream holds a lease in the user's sorted set (member: a random lease id, score:
when it lapses). Taking one is a MULTI (drop lapsed leases, add ours, count), so concurrent
takers on any replica are serialised by Redis and the count is exact. The process holding a
stream renews its leases on a timer; a crashed process stops renewing and its leases lapse
within ``lease_s``, so a crash frees the user's streams without any cleanup. The key also
carries a TTL, so a user who stops streaming leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from backend.aio import cancel_and_wait
from backend.errors import TooManyStreams
from backend.store import keys

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 5
RENEW_PARTS = 20  # each lease is renewed once per lease_s / 3, a twentieth of them at a time


streams_key = keys.user_streams


class StreamSlots:
    """``lease = await slots.acquire(user)`` … ``await slots.release(lease)``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        limit: int,
        lease_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._limit = limit
        self._lease_s = lease_s
        self._clock = clock
        self._held: dict[str, str] = {}  # lease id -> user, the leases this process renews
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        return len(self._held)

    async def acquire(self, user: str) -> str:
        """Take a stream slot for ``user``; raises ``TooManyStreams`` (429) past the limit."""
        lease = secrets.token_hex(8)
        key = streams_key(user)
        now = self._clock()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {lease: now + self._lease_s})
            pipe.zcard(key)
            pipe.expire(key, int(self._lease_s * 2))
            _, _, count, _ = await pipe.execute()
        if int(count) > self._limit:
            await self._redis.zrem(key, lease)
            raise TooManyStreams(
                f"you already have {self._limit} progress streams open",
                retry_after_s=RETRY_AFTER_S,
            )
        self._held[lease] = user
        return lease

    async def release(self, lease: str) -> None:
        user = self._held.pop(lease, None)
        if user is not None:
            try:
                await self._redis.zrem(streams_key(user), lease)
            except RedisError as exc:  # the lease lapses on its own within lease_s
                log.warning("sse_slot_release_failed", error=type(exc).__name__)

    async def count(self, user: str) -> int:
        key = streams_key(user)
        return int(await self._redis.zcount(key, self._clock(), "+inf"))

    async def renew(self, part: int | None = None) -> None:
        """Push back the lapse time of this process's leases: all, or one of ``RENEW_PARTS``.

        One ZADD per user (many members each), so 1,000 streams cost a few dozen commands.
        """
        by_user: dict[str, list[str]] = {}
        for lease, user in self._held.items():
            if part is None or int(lease, 16) % RENEW_PARTS == part:
                by_user.setdefault(user, []).append(lease)
        if not by_user:
            return
        until = self._clock() + self._lease_s
        async with self._redis.pipeline(transaction=False) as pipe:
            for user, leases in by_user.items():
                # XX: a lease released meanwhile must not come back.
                pipe.zadd(streams_key(user), dict.fromkeys(leases, until), xx=True)
                pipe.expire(streams_key(user), int(self._lease_s * 2))
            await pipe.execute()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._renew_forever(), name="sse-slot-renewal")

    async def stop(self) -> None:
        """Stop renewing and give back every slot this process holds, in one round trip.

        Streams still winding up after this (a shutdown cancels them late) find their lease
        gone and make no Redis call: the app closes its clients right after, and a call
        then would open a connection that nothing closes.
        """
        task, self._task = self._task, None
        await cancel_and_wait(task)
        held, self._held = self._held, {}
        if not held:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for lease, user in held.items():
                    pipe.zrem(streams_key(user), lease)
                await pipe.execute()
        except RedisError as exc:  # they lapse on their own within lease_s
            log.warning("sse_slot_release_failed", error=type(exc).__name__)

    async def _renew_forever(self) -> None:
        # A slice at a time: renewing every lease at once blocked the loop for ~50 ms at 1,000
        # streams, which load/bench_sse.py saw as a 0.5 s p99 in event delivery.
        tick_s = self._lease_s / 3 / RENEW_PARTS
        for part in itertools.cycle(range(RENEW_PARTS)):
            await asyncio.sleep(tick_s)
            try:
                await self.renew(part)
            except RedisError as exc:
                log.warning("sse_slot_renewal_failed", error=type(exc).__name__)
