"""The event hub against the suite's real Redis: fan-out, slow listeners, reconnection, stop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from backend.models import JobRecord, JobStatus, Stage
from backend.progress.events import JobEvent, StreamId
from backend.progress.hub import EventHub, Item, Listener, Signal
from backend.store import keys
from backend.store.jobs import JobStore
from backend.store.scripts import Scripts


@pytest.fixture
async def hub(redis: aioredis.Redis) -> AsyncIterator[EventHub]:
    hub = EventHub(redis, queue_size=4, backoff_base_s=0.05, poll_s=0.1)
    await hub.start()
    assert await hub.wait_subscribed(5)
    yield hub
    await hub.stop()


async def publish(redis: aioredis.Redis, job_id: str, seq: int, event: str = "progress") -> None:
    await redis.publish(keys.EVENTS_CHANNEL, f'{job_id} 100-{seq} {event} {{"n": {seq}}}')


async def next_item(listener: Listener) -> Item:
    return await asyncio.wait_for(listener.get(), 2)


async def test_events_reach_only_the_listeners_of_their_job(
    hub: EventHub, redis: aioredis.Redis
) -> None:
    with hub.listen("a") as a1, hub.listen("a") as a2, hub.listen("b") as b:
        assert hub.listener_count == 3
        await redis.publish(keys.EVENTS_CHANNEL, "not an event")
        await publish(redis, "nobody-listens", 1)
        await publish(redis, "a", 1)
        await publish(redis, "b", 2)
        for listener, seq in ((a1, 1), (a2, 1), (b, 2)):
            item = await next_item(listener)
            assert isinstance(item, JobEvent) and item.id == StreamId(100, seq)
        assert not a1._items and not b._items
    assert hub.listener_count == 0


async def test_events_written_by_the_store_scripts_are_fanned_out(
    hub: EventHub, redis: aioredis.Redis
) -> None:
    store = JobStore(redis, Scripts(redis), queue_name="q")
    record = JobRecord(job_id="j1", user="u", cache_key="k", request={}, timeout_s=60,
                       status=JobStatus.QUEUED, stage=Stage.QUEUED, progress=0,
                       created_at=time.time())  # fmt: skip
    with hub.listen("j1") as listener:
        admitted = await store.admit(record, arq_payload=b"{}", arq_expires_ms=60_000,
                                     dedup_window_ms=0, per_user=5, capacity=5, slots=1,
                                     median_duration_s=20.0)  # fmt: skip
        assert admitted.code == 1
        item = await next_item(listener)
    assert isinstance(item, JobEvent) and item.event == "progress"
    assert json.loads(item.data)["status"] == "queued"
    [(entry_id, _)] = await redis.xrange(keys.events("j1"))
    assert item.id == StreamId.parse(entry_id)


async def test_a_slow_listener_is_told_to_resync_and_never_blocks_others(
    hub: EventHub, redis: aioredis.Redis
) -> None:
    with hub.listen("a") as slow, hub.listen("a") as fast:
        received: list[Item] = []
        for seq in range(1, 11):
            await publish(redis, "a", seq)
            received.append(await next_item(fast))
        assert [i.id.seq for i in received if isinstance(i, JobEvent)] == list(range(1, 11))
        assert slow.overflows >= 1 and len(slow._items) <= 4
        assert await next_item(slow) is Signal.RESYNC


async def test_reader_reconnects_after_losing_redis_and_listeners_resync(
    hub: EventHub, redis: aioredis.Redis
) -> None:
    with hub.listen("a") as listener:
        await redis.client_kill_filter(_type="pubsub")
        assert await next_item(listener) is Signal.RESYNC
        assert hub.subscriptions == 2 and hub.subscribed
        await publish(redis, "a", 7)
        item = await next_item(listener)
        assert isinstance(item, JobEvent) and item.id == StreamId(100, 7)


async def test_stop_closes_every_listener(redis: aioredis.Redis) -> None:
    hub = EventHub(redis)
    await hub.start()
    listener = hub.listen("a")
    await hub.stop()
    assert not hub.subscribed
    items = [await next_item(listener) for _ in range(len(listener._items))]
    assert items[-1] is Signal.CLOSED
    listener.close()
    listener.close()  # idempotent
    assert hub.listener_count == 0
