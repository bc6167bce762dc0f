"""Per-user SSE stream slots in Redis: exact across processes, self-healing after a crash."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from backend.errors import TooManyStreams
from backend.progress.slots import StreamSlots


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_the_cap_is_shared_by_every_process(redis: aioredis.Redis) -> None:
    one, two = StreamSlots(redis, limit=2), StreamSlots(redis, limit=2)
    first = await one.acquire("alice")
    await two.acquire("alice")
    with pytest.raises(TooManyStreams) as rejected:
        await one.acquire("alice")
    assert rejected.value.status == 429 and rejected.value.headers()["Retry-After"]
    assert await one.count("alice") == 2  # the rejected lease was taken back
    await one.acquire("bob")  # other users are not affected
    await one.release(first)
    await one.release(first)  # idempotent
    await two.acquire("alice")
    assert await one.count("alice") == 2 and one.held == 1 and two.held == 2


async def test_a_crashed_process_frees_its_slots_once_the_leases_lapse(
    redis: aioredis.Redis,
) -> None:
    clock = Clock()
    crashed = StreamSlots(redis, limit=1, lease_s=60, clock=clock)
    live = StreamSlots(redis, limit=1, lease_s=60, clock=clock)
    await crashed.acquire("alice")
    with pytest.raises(TooManyStreams):
        await live.acquire("alice")
    clock.now += 61  # the crashed process never renews
    await live.acquire("alice")
    assert await live.count("alice") == 1
    assert 0 < await redis.ttl("sq:user:alice:streams") <= 120


async def test_renewal_keeps_open_streams_counted(redis: aioredis.Redis) -> None:
    clock = Clock()
    holder = StreamSlots(redis, limit=1, lease_s=60, clock=clock)
    other = StreamSlots(redis, limit=1, lease_s=60, clock=clock)
    lease = await holder.acquire("alice")
    clock.now += 50
    await holder.renew()
    clock.now += 50
    with pytest.raises(TooManyStreams):
        await other.acquire("alice")
    await holder.release(lease)
    await holder.renew()  # a released lease is not brought back
    await other.acquire("alice")


async def test_a_stopping_process_gives_its_slots_back_at_once(redis: aioredis.Redis) -> None:
    # A deploy: the old API process stops with streams open. Before, their slots stayed
    # taken until the leases lapsed (a minute), and a stream winding up after the stop
    # released its slot over a client the app had already closed.
    stopping, other = StreamSlots(redis, limit=2), StreamSlots(redis, limit=2)
    await stopping.start()
    late = await stopping.acquire("alice")
    await stopping.acquire("alice")
    await other.acquire("bob")
    await stopping.stop()
    assert await other.count("alice") == 0 and stopping.held == 0
    assert await other.count("bob") == 1  # another process's slots are left alone
    await stopping.release(late)  # a stream ending after the stop: nothing left to do
    await other.acquire("alice")
    await other.acquire("alice")
