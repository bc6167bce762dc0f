"""What a message on ``sq:wake`` wakes, over a real Redis: the poll loop for work, the
deliverer for a webhook, the look for deferred jobs only after a requeue, arq's abort set
only after an abort (issue 17: wake, don't poll)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from backend.queue.wakeups import ABORT, REQUEUE, Wakeups
from backend.store import keys


@pytest.fixture
async def wakeups(redis: aioredis.Redis) -> AsyncIterator[tuple[Wakeups, list[str]]]:
    woken = Wakeups(redis)
    delivered: list[str] = []
    woken.add_listener(lambda: delivered.append("webhook"))
    woken.start()
    assert await woken.wait(5)  # subscribed: counts as every kind at once
    assert delivered == ["webhook"] and woken.take(REQUEUE) and woken.take(ABORT)
    delivered.clear()
    yield woken, delivered
    await woken.stop()


async def test_work_wakes_the_poll_loop_and_nothing_else(
    redis: aioredis.Redis, wakeups: tuple[Wakeups, list[str]]
) -> None:
    woken, delivered = wakeups
    for kind in ("job", "permit"):
        await redis.publish(keys.WAKE_CHANNEL, kind)
        assert await woken.wait(5), kind
    assert delivered == []
    assert not woken.take(REQUEUE) and not woken.take(ABORT)


async def test_a_requeue_or_an_abort_is_remembered_once(
    redis: aioredis.Redis, wakeups: tuple[Wakeups, list[str]]
) -> None:
    woken, delivered = wakeups
    await redis.publish(keys.WAKE_CHANNEL, "requeue")
    assert await woken.wait(5)
    assert woken.take(REQUEUE) and not woken.take(REQUEUE) and not woken.take(ABORT)
    await redis.publish(keys.WAKE_CHANNEL, "abort")
    assert await woken.wait(5)
    assert woken.take(ABORT) and not woken.take(ABORT) and not woken.take(REQUEUE)
    assert delivered == []


async def test_a_webhook_wakes_the_deliverer_not_the_poll_loop(
    redis: aioredis.Redis, wakeups: tuple[Wakeups, list[str]]
) -> None:
    woken, delivered = wakeups
    await redis.publish(keys.WAKE_CHANNEL, "webhook")
    for _ in range(100):
        if delivered:
            break
        await asyncio.sleep(0.02)
    assert delivered == ["webhook"]
    assert not await woken.wait(0.2)


async def test_a_message_without_a_kind_counts_as_every_kind(
    redis: aioredis.Redis, wakeups: tuple[Wakeups, list[str]]
) -> None:
    woken, delivered = wakeups
    await redis.publish(keys.WAKE_CHANNEL, "")  # from a process that predates the kinds
    assert await woken.wait(5)
    assert delivered == ["webhook"] and woken.take(REQUEUE) and woken.take(ABORT)
