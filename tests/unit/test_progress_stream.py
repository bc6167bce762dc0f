"""Replay-then-live streams against real Redis and the real store scripts: no gaps, no repeats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from backend.models import JobRecord, JobStatus, Stage
from backend.progress.events import EventLog, JobEvent, StreamId
from backend.progress.hub import EventHub, Signal
from backend.progress.stream import JobStream, open_stream
from backend.store import keys
from backend.store.jobs import JobStore
from backend.store.scripts import Scripts
from fixtures.attempts import finish_attempt, start_attempt


@pytest.fixture
def store(redis: aioredis.Redis) -> JobStore:
    return JobStore(redis, Scripts(redis), queue_name="q")


@pytest.fixture
async def hub(redis: aioredis.Redis) -> AsyncIterator[EventHub]:
    hub = EventHub(redis, poll_s=0.1)
    await hub.start()
    assert await hub.wait_subscribed(5)
    yield hub
    await hub.stop()


async def admitted(store: JobStore, job_id: str = "j1") -> JobRecord:
    record = JobRecord(job_id=job_id, user="u", cache_key="k", request={}, timeout_s=60,
                       status=JobStatus.QUEUED, stage=Stage.QUEUED, progress=0,
                       created_at=time.time())  # fmt: skip
    result = await store.admit(record, arq_payload=b"{}", arq_expires_ms=60_000,
                               dedup_window_ms=0, per_user=5, capacity=5, slots=1,
                               median_duration_s=20.0)  # fmt: skip
    assert result.code == 1
    return record


TOKENS: dict[str, str] = {}  # job id -> the fence of its running attempt


async def advance(store: JobStore, record: JobRecord, stage: Stage, progress: int) -> JobRecord:
    if record.status is JobStatus.QUEUED:  # starting is the "started" stage, 5 %
        record, TOKENS[record.job_id] = await start_attempt(store, record.job_id)
        if (stage, progress) == (record.stage, record.progress):
            return record
    moved = record.model_copy(update={"stage": stage, "progress": progress})
    assert await store.progress(moved, "stage", "progress", token=TOKENS[record.job_id])
    return moved


async def complete(store: JobStore, record: JobRecord) -> JobRecord:
    if record.status is JobStatus.QUEUED:
        record = await advance(store, record, Stage.STARTED, 5)
    return await finish_attempt(store, record, TOKENS[record.job_id])


async def take(stream: JobStream, count: int) -> list[JobEvent]:
    events = stream.events()
    return [await asyncio.wait_for(anext(events), 2) for _ in range(count)]


async def test_replay_then_live_until_the_final_event(
    hub: EventHub, store: JobStore, redis: aioredis.Redis
) -> None:
    record = await advance(store, await admitted(store), Stage.STARTED, 5)
    stream = await open_stream(hub, EventLog(redis), record, None)
    assert stream is not None
    events = stream.events()
    replayed = [await anext(events), await anext(events)]
    assert [e.event for e in replayed] == ["progress", "progress"]
    record = await advance(store, record, Stage.SUBMITTED, 10)
    live = await asyncio.wait_for(anext(events), 2)
    await complete(store, record)
    final = await asyncio.wait_for(anext(events), 2)
    assert final.event == "completed" and final.final
    assert await anext(events, None) is None  # the stream ends after the final event
    ids = [e.id for e in [*replayed, live, final]]
    assert ids == sorted(ids) and len(set(ids)) == 4
    stream.close()
    assert hub.listener_count == 0


async def test_events_both_read_and_published_are_delivered_once(
    hub: EventHub, store: JobStore, redis: aioredis.Redis
) -> None:
    record = await admitted(store)
    stream = await open_stream(hub, EventLog(redis), record, None)
    assert stream is not None
    [queued] = stream._backlog
    # The race the order guards against: what was read may also arrive live, in any number.
    hub.dispatch(queued)
    record = await advance(store, record, Stage.STARTED, 5)
    hub.dispatch(queued)
    await complete(store, record)
    events = [e async for e in stream.events()]
    assert [e.event for e in events] == ["progress", "progress", "completed"]
    stream.close()


async def test_resume_after_an_id_and_resync_after_missed_events(
    store: JobStore, redis: aioredis.Redis
) -> None:
    deaf = EventHub(redis)  # never started: it hears nothing, like a hub cut off from Redis
    record = await advance(store, await admitted(store), Stage.STARTED, 5)
    [(first, _), _] = await redis.xrange(keys.events("j1"))
    stream = await open_stream(deaf, EventLog(redis), record, StreamId.parse(first))
    assert stream is not None
    [started] = await take(stream, 1)
    assert started.id > StreamId.parse(first)
    await complete(store, await advance(store, record, Stage.SUBMITTED, 10))
    stream.listener.deliver(Signal.RESYNC)  # what the hub does once it is back
    caught_up = [e async for e in stream.events()]
    assert [e.event for e in caught_up] == ["progress", "completed"]
    stream.close()


async def test_finished_jobs(hub: EventHub, store: JobStore, redis: aioredis.Redis) -> None:
    done = await complete(store, await admitted(store))
    log = EventLog(redis)
    stream = await open_stream(hub, log, done, None)
    assert stream is not None
    # queued, started, completed
    assert [e.event for e in await take(stream, 3)] == ["progress", "progress", "completed"]
    stream.close()
    # Resuming at the final event: nothing left to send.
    final = StreamId.parse((await redis.xrevrange(keys.events("j1"), count=1))[0][0])
    assert await open_stream(hub, log, done, final) is None
    # The stream has expired but the record is final: its final event is rebuilt.
    await redis.delete(keys.events("j1"))
    stream = await open_stream(hub, log, done, None)
    assert stream is not None
    [rebuilt] = await take(stream, 1)
    assert rebuilt.event == "completed" and rebuilt.data == done.view().model_dump_json()
    stream.close()
    assert await open_stream(hub, log, done, rebuilt.id) is None
    assert hub.listener_count == 0
