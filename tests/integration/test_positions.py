"""Waiting jobs' places against real Redis and the real scripts: admitJob places a new job,
announcePositions keeps every waiting job's place current in its record and its stream."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.constants import retry_key_prefix

from backend.config import LimitSettings
from backend.errors import FencedOut
from backend.limits.estimates import QueueEstimates, eta_s
from backend.limits.positions import PositionAnnouncer
from backend.models import JobRecord, JobStatus, Stage
from backend.store import keys
from backend.store.jobs import Admission, Announcement, JobStore, PlaceRules
from backend.store.scripts import Scripts, with_includes
from backend.store.writes import Written
from fixtures.attempts import start_attempt

SLOTS, MEDIAN_S = 1, 20.0


@pytest.fixture
def store(redis: aioredis.Redis) -> JobStore:
    return JobStore(redis, Scripts(redis), queue_name="q")


def new_record(job_id: str, description: str = "a sprite") -> JobRecord:
    return JobRecord(job_id=job_id, user="u", cache_key=f"key-{job_id}",
                     request={"description": description}, timeout_s=60,
                     status=JobStatus.QUEUED, stage=Stage.QUEUED, progress=0,
                     created_at=time.time())  # fmt: skip


async def admit(store: JobStore, job_id: str, description: str = "a sprite") -> Admission:
    admission = await store.admit(
        new_record(job_id, description), arq_payload=b"{}", arq_expires_ms=60_000,
        dedup_window_ms=0, per_user=100, capacity=100, slots=SLOTS, median_duration_s=MEDIAN_S,
    )  # fmt: skip
    assert admission.code == 1
    return admission


async def announce(
    store: JobStore,
    *,
    median_s: float = MEDIAN_S,
    slice_size: int = 500,
    every_move_up_to: int = 100,
    wait_ratio: float = 0.1,
    max_events: int = 100,
) -> Announcement:
    rules = PlaceRules(min_wait_change_s=1.0, min_wait_change_ratio=wait_ratio,
                       every_move_up_to=every_move_up_to, min_move_ratio=0.2,
                       max_events=max_events)  # fmt: skip
    return await store.announce_positions(
        slots=SLOTS, median_duration_s=median_s, limit=100, rules=rules, slice_size=slice_size
    )


async def last_view(redis: aioredis.Redis, job_id: str) -> dict[str, Any]:
    [(_, fields)] = await redis.xrevrange(keys.events(job_id), count=1)
    view: dict[str, Any] = json.loads(fields[b"data"])
    return view


async def place(store: JobStore, job_id: str) -> tuple[int | None, float | None]:
    record = await store.get(job_id)
    assert record is not None
    return record.position, record.estimated_wait_s


async def event_count(redis: aioredis.Redis, job_id: str) -> int:
    return int(await redis.xlen(keys.events(job_id)))


async def start(store: JobStore, job_id: str) -> tuple[JobRecord, str]:
    return await start_attempt(store, job_id)


async def test_lua_wait_formula_matches_the_python_one(redis: aioredis.Redis) -> None:
    script = redis.register_script(
        with_includes("--@include place\nreturn queue_place(unpack(ARGV))")
    )
    grid = list(itertools.product(range(1, 13), range(5), range(6), (0.3, 7.25, 20.0, 33.3)))
    async with redis.pipeline(transaction=False) as pipe:
        for args in grid:
            await script(args=list(args), client=pipe)
        answers = await pipe.execute()
    assert [float(a) for a in answers] == [eta_s(*args) for args in grid]


async def test_admit_places_the_new_job_in_its_answer_record_and_first_event(
    store: JobStore, redis: aioredis.Redis
) -> None:
    admitted = [await admit(store, job_id) for job_id in ("a", "b", "c")]
    expected = [(1, 0.0), (2, 20.0), (3, 40.0)]  # one slot, free: 0 s, then a run per place
    assert [(a.position, a.estimated_wait_s) for a in admitted] == expected
    assert [await place(store, job_id) for job_id in ("a", "b", "c")] == expected
    first = await last_view(redis, "c")
    assert (first["position"], first["estimated_wait_s"]) == (3, 40.0)
    assert first["status"] == "queued" and first["job_id"] == "c"


async def test_a_prompt_that_mimics_the_place_keys_does_not_confuse_the_scripts(
    store: JobStore, redis: aioredis.Redis
) -> None:
    tricky = 'ends,"position":99,"estimated_wait_s":1.5} like a view'
    await admit(store, "a")
    await admit(store, "b", tricky)
    view = await last_view(redis, "b")
    assert view["description"] == tricky and view["position"] == 2

    await start(store, "a")
    assert (await announce(store)).announced == 1
    view = await last_view(redis, "b")
    assert view["description"] == tricky
    assert (view["position"], view["estimated_wait_s"]) == (1, 20.0)


@pytest.mark.parametrize("slice_size", [500, 1, 2])  # one walk; slices across the queue
async def test_announce_counts_waiting_jobs_exactly_and_pushes_only_changes(
    store: JobStore, redis: aioredis.Redis, slice_size: int
) -> None:
    for job_id in ("a", "b", "c", "d"):
        await admit(store, job_id)
    await start(store, "b")  # out of order: a job behind the first one is running
    before = {job_id: await event_count(redis, job_id) for job_id in ("a", "c", "d")}

    assert await announce(store, slice_size=slice_size) == Announcement(waiting=3, announced=3)
    # a keeps place 1 but now waits a run for the busy slot; c and d each move up one.
    places = {job_id: await place(store, job_id) for job_id in ("a", "b", "c", "d")}
    assert places == {"a": (1, 20.0), "b": (None, None), "c": (2, 40.0), "d": (3, 60.0)}
    for job_id in ("a", "c", "d"):
        assert await event_count(redis, job_id) == before[job_id] + 1
        view = await last_view(redis, job_id)
        assert (view["position"], view["estimated_wait_s"]) == places[job_id]
        assert view["status"] == "queued"

    # Nothing moved: nothing is announced again.
    assert await announce(store, slice_size=slice_size) == Announcement(waiting=3, announced=0)
    assert [await event_count(redis, j) for j in ("a", "c", "d")] == [
        before[j] + 1 for j in ("a", "c", "d")
    ]


async def test_a_small_drift_in_the_wait_is_not_announced_a_large_one_is(
    store: JobStore,
) -> None:
    await admit(store, "a")
    await admit(store, "b")  # waits 20 s
    assert (await announce(store, median_s=21.0)).announced == 0  # 1 s, under 10 % of 20 s
    assert await place(store, "b") == (2, 20.0)
    assert (await announce(store, median_s=25.0)).announced == 1  # a has no wait to change
    assert await place(store, "b") == (2, 25.0)


async def test_deep_in_the_queue_only_a_large_move_is_announced(store: JobStore) -> None:
    ids = [f"job{n:02d}" for n in range(12)]  # places 1..12, in queue order
    for job_id in ids:
        await admit(store, job_id)
    await start(store, ids[0])
    # Every move within the first 5 places; beyond, a move of 20 % of the announced place.
    # (Waits are held back by a large wait ratio, so only the position rule speaks here.)
    deep = {"every_move_up_to": 5, "wait_ratio": 10.0}
    assert await announce(store, **deep) == Announcement(waiting=11, announced=5)
    assert [(await place(store, j))[0] for j in ids[1:]] == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    await start(store, ids[1])
    # Now each job has moved 2 places from what it was last told: 2 is 20 % of 7..10 (the
    # jobs told 7..10 hear of it), not of 11 or 12.
    assert await announce(store, **deep) == Announcement(waiting=10, announced=8)
    assert [(await place(store, j))[0] for j in ids[2:]] == [1, 2, 3, 4, 5, 6, 7, 8, 11, 12]


@pytest.mark.parametrize("slice_size", [500, 2])
async def test_events_per_walk_are_bounded_and_spent_from_the_head(
    store: JobStore, slice_size: int
) -> None:
    ids = [f"job{n}" for n in range(6)]
    for job_id in ids:
        await admit(store, job_id)
    await start(store, ids[0])  # all five waiting jobs move up one place
    assert await announce(store, max_events=3, slice_size=slice_size) == Announcement(3, 3)
    assert [(await place(store, j))[0] for j in ids[1:]] == [1, 2, 3, 5, 6]
    # The next walk reaches the rest.
    assert (await announce(store, max_events=3, slice_size=slice_size)).announced == 2
    assert [(await place(store, j))[0] for j in ids[1:]] == [1, 2, 3, 4, 5]


async def test_a_requeued_job_is_placed_at_once_with_its_defer_in_the_wait(
    store: JobStore, redis: aioredis.Redis
) -> None:
    await admit(store, "a")
    await admit(store, "b")
    running, token = await start(store, "a")
    assert await place(store, "a") == (None, None)
    back = running.requeued()
    placed = await store.requeue(back, "status", "stage", "progress", token=token,
                                 defer_s=30.0, slots=1, median_duration_s=20.0)  # fmt: skip
    assert placed is not None and placed.estimated_wait_s == 30.0
    view = await last_view(redis, "a")
    assert view["status"] == "queued" and view["estimated_wait_s"] == 30.0
    # Deferred 30 s, it waits behind "b", which may start at once.
    assert view["position"] == 2 and await place(store, "a") == (2, 30.0)

    await announce(store)
    position, wait = await place(store, "a")
    assert position == 2 and wait is not None and 28.0 <= wait <= 30.0


async def test_one_process_announces_per_interval(store: JobStore, redis: aioredis.Redis) -> None:
    await admit(store, "a")
    estimates = QueueEstimates(redis, LimitSettings())
    first, second = (
        PositionAnnouncer(redis, store, estimates, capacity=100, interval_s=30) for _ in range(2)
    )
    assert await first.run_once() == Announcement(waiting=1, announced=1)  # no workers: ETA
    assert await second.run_once() is None
    assert await first.run_once() is None
    await redis.delete(keys.POSITIONS_TICK)  # the interval is over
    assert await second.run_once() == Announcement(waiting=1, announced=0)


async def test_take_flight_takes_the_lock_and_writes_stage_10_only_for_the_fence(
    store: JobStore, redis: aioredis.Redis
) -> None:
    for job_id in ("f1", "f2"):
        await admit(store, job_id)
    first, first_token = await start(store, "f1")
    second, second_token = await start(store, "f2")
    # Both jobs ask for the same image: one lock between them.
    second = second.model_copy(update={"cache_key": first.cache_key})
    submitted = first.model_copy(update={"stage": Stage.SUBMITTED, "progress": 10})
    events = await event_count(redis, "f1")
    with pytest.raises(FencedOut):  # a stale token takes nothing and writes nothing
        await store.flights.take(submitted, "not-the-fence", lease_ms=5_000)
    assert await redis.exists(keys.flight(first.cache_key)) == 0
    assert await store.flights.take(submitted, first_token, lease_ms=5_000) is True
    assert await redis.get(keys.flight(first.cache_key)) == first_token.encode()
    stored = await store.get("f1")
    assert stored is not None and (stored.stage, stored.progress) == (Stage.SUBMITTED, 10)
    assert await event_count(redis, "f1") == events + 1
    # Held: the other attempt waits, and its job is not moved to stage 10.
    waiting = second.model_copy(update={"stage": Stage.SUBMITTED, "progress": 10})
    assert await store.flights.take(waiting, second_token, lease_ms=5_000) is False
    other = await store.get("f2")
    assert other is not None and other.stage is Stage.STARTED


async def test_a_start_refused_for_want_of_a_permit_is_not_one_of_arqs_tries(
    store: JobStore, redis: aioredis.Redis
) -> None:
    # A job at the head of a queue whose call permits are all held is picked and refused
    # several times a second. Before, each refusal was one of arq's tries, and after
    # ARQ_MAX_TRIES (1000, ~30 s of a full cap with three workers) arq refused the job for
    # good while our clean-up kept it queued: stuck forever (the chaos run, seed 15).
    await admit(store, "p1")
    record = await store.get("p1")
    assert record is not None
    await redis.zadd(keys.PERMITS, {"someone-else": int(time.time() * 1000) + 60_000})
    await redis.set(retry_key_prefix + "p1", 7)  # arq counted this run before our task
    started = record.model_copy(update={"status": JobStatus.ACTIVE, "progress": 5})
    written, held = await store.start_attempt(
        record, started, token=uuid.uuid4().hex, worker_id="w", lease_ms=5_000, max_calls=1
    )
    assert (written, held) == (Written.NO_PERMIT, 1)
    assert await redis.get(retry_key_prefix + "p1") == b"6"  # this run was not a try
    stored = await store.get("p1")
    assert stored is not None and stored.status is JobStatus.QUEUED  # nothing else changed
