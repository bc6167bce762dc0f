"""Admission under concurrency: exact caps across API processes, dedup, release, reconciler."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from arq.constants import job_key_prefix
from redis.exceptions import ResponseError

from backend.config import Settings
from backend.embedded_redis import EmbeddedRedis, free_port
from backend.limits.estimates import eta_s
from backend.limits.reconciler import CONFIRM_S, GRACE_S, Reconciler
from backend.models import JobStatus, SpriteRequest
from backend.queue.producer import Producer
from backend.queue.resources import Resources, open_resources
from backend.store import jobs as jobs_module
from backend.store import keys
from backend.store.jobs import Guard, Written
from backend.store.tokens import TokenStore
from fixtures.factories import auth, sprite_request, wait_until
from fixtures.stack import spawn, wait_http

# ---- helpers -----------------------------------------------------------------------------


async def start_apis(
    settings: Settings, processes: list[subprocess.Popen[bytes]], count: int
) -> list[str]:
    """``count`` real ``spritequeue api`` processes on one Redis; their base URLs."""
    urls = []
    for _ in range(count):
        port = free_port()
        processes.append(spawn(["api", "--port", str(port)], settings))
        urls.append(f"http://127.0.0.1:{port}")
    # They start in parallel; waiting in a thread keeps this loop free meanwhile.
    await asyncio.gather(*(asyncio.to_thread(wait_http, url + "/health/live") for url in urls))
    return urls


@asynccontextmanager
async def clients(
    urls: list[str], connections: int = 100
) -> AsyncIterator[list[httpx.AsyncClient]]:
    # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout: reusing one
    # just as the server closes it loses the request (ReadError), which a loaded machine
    # makes likely enough to flake.
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=1.0
    )
    # No pool timeout: on a loaded machine a request may wait its turn for a long while.
    timeout = httpx.Timeout(30, pool=None)
    opened = [httpx.AsyncClient(base_url=u, timeout=timeout, limits=limits) for u in urls]
    try:
        yield opened
    finally:
        for http in opened:
            await http.aclose()


async def make_tokens(redis: aioredis.Redis, users: list[str]) -> dict[str, str]:
    store = TokenStore(redis)
    return {user: await store.create(user) for user in users}


@dataclass(frozen=True)
class Counters:
    inflight: int
    active: int
    owners: int  # sq:inflight-users
    queued_in_arq: int
    per_user: dict[str, int]

    @property
    def zero(self) -> bool:
        return not (self.inflight or self.active or self.owners or self.queued_in_arq
                    or any(self.per_user.values()))  # fmt: skip


async def counters(redis: aioredis.Redis, settings: Settings, users: list[str]) -> Counters:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.INFLIGHT)
        pipe.zcard(keys.ACTIVE)
        pipe.hlen(keys.INFLIGHT_USERS)
        pipe.zcard(settings.queue_name)
        for user in users:
            pipe.zcard(keys.user_inflight(user))
        inflight, active, owners, queued, *per_user = await pipe.execute()
    return Counters(inflight, active, owners, queued, dict(zip(users, per_user, strict=True)))


async def assert_every_slot_has_its_job(redis: aioredis.Redis, settings: Settings) -> set[str]:
    """Each slot in ``sq:inflight`` has a queued job record, arq's job and queue entry, and is
    counted for its user exactly once; returns the slot ids."""
    slots = {j.decode() for j in await redis.zrange(keys.INFLIGHT, 0, -1)}
    owners = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.INFLIGHT_USERS)).items()}
    assert set(owners) == slots
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in sorted(slots):
            pipe.hmget(keys.job(job_id), ["status", "user"])
            pipe.exists(job_key_prefix + job_id)
            pipe.zscore(settings.queue_name, job_id)
            pipe.zscore(keys.user_inflight(owners[job_id]), job_id)
        replies = await pipe.execute()
    for index, job_id in enumerate(sorted(slots)):
        (status, user), arq_job, queued_at, user_slot = replies[index * 4 : index * 4 + 4]
        assert (status, user) == (b"queued", owners[job_id].encode()), job_id
        assert arq_job == 1 and queued_at is not None and user_slot is not None, job_id
    per_user = Counter(owners.values())
    for user, count in per_user.items():
        assert await redis.zcard(keys.user_inflight(user)) == count
    assert await redis.zcard(settings.queue_name) == len(slots)
    return slots


@dataclass(frozen=True)
class Answer:
    user: str
    key: int  # which of the user's distinct requests
    api: int
    status: int
    body: dict[str, Any]
    retry_after: str | None
    resent: bool = False  # an earlier try of this request was cut off in transit


def first_per_job(answers: list[Answer]) -> list[Answer]:
    """One 202 per admitted job: its ``deduplicated: false`` answer, or, when that answer
    was lost in transit and the resend came back deduplicated, the resend's."""
    chosen: dict[str, Answer] = {}
    for answer in sorted(answers, key=lambda a: bool(a.body.get("deduplicated"))):
        if answer.status == 202:
            chosen.setdefault(answer.body["job_id"], answer)
    return list(chosen.values())


# ---- exact caps under a burst ---------------------------------------------------------------

USERS = 200
CAPACITY = 500
PER_USER = 5
COPIES_OF_FIRST = 3  # each user's first request is sent this many times at once, one per API
LANES = 240  # requests in flight at once, over the three processes


def burst_plan(users: list[str]) -> list[tuple[str, int, int]]:
    """(user, request index, API index) in sending order.

    User ``u`` sends 5, 6 or 7 distinct requests, so heavy users meet their own cap, and
    200 x 5 > 500, so the queue fills too. Users are sent roughly in turn (shuffled within
    blocks of ten): the early users reach their cap long before the queue is full, which
    makes both rejections certain, however the processes interleave.
    """
    rng = random.Random(3)
    plan: list[tuple[str, int, int]] = []
    for start in range(0, len(users), 10):
        block: list[tuple[str, int, int]] = []
        for u in range(start, min(start + 10, len(users))):
            distinct = PER_USER + u % 3
            block += [(users[u], 0, (u + copy) % 3) for copy in range(COPIES_OF_FIRST)]
            block += [(users[u], k, (u + k) % 3) for k in range(1, distinct)]
        rng.shuffle(block)
        plan += block
    return plan


async def run_lanes(steps: list[Any], act: Callable[[Any], Awaitable[None]], lanes: int) -> None:
    """Run ``act`` over ``steps`` in order, ``lanes`` at a time.

    A fixed set of lanes rather than one task per request: thousands of requests parked on
    httpx's pool cost more than the requests themselves (its waiters are scanned per hand-off).
    """
    pending = iter(steps)

    async def lane() -> None:
        for step in pending:
            await act(step)

    await asyncio.gather(*(lane() for _ in range(lanes)))


RESENDS = 2


async def post_all(
    https: list[httpx.AsyncClient], tokens: dict[str, str], plan: list[tuple[str, int, int]]
) -> list[Answer]:
    answers: list[Answer] = []

    async def one(step: tuple[str, int, int]) -> None:
        user, key, api = step
        body = sprite_request(f"burst sprite for {user} number {key}")
        for resend in range(RESENDS + 1):
            try:
                response = await https[api].post("/v1/jobs", json=body, headers=auth(tokens[user]))
                break
            except httpx.TransportError:
                # A keep-alive connection dropped under the burst (seen on 2 cores, before
                # this round's changes too). The dedup window (300 s here) makes the resend
                # idempotent: a request that did get through comes back deduplicated.
                if resend == RESENDS:
                    raise
        answers.append(Answer(user, key, api, response.status_code, response.json(),
                              response.headers.get("retry-after"), resent=resend > 0))  # fmt: skip

    await run_lanes(plan, one, lanes=LANES)
    return answers


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_burst_across_three_apis_admits_exactly_the_caps_then_counters_return_to_zero(
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    # No worker during the burst: nothing may finish and free a slot, so "exactly capacity"
    # is exact. (Slow mock jobs would do it too, but a worker's start-up and polling would
    # add CPU noise on small CI machines and nothing to what is asserted.)
    # A dedup window longer than the test: on a loaded machine one process can lag the
    # others by seconds, and copies answered apart by more than the window are rightly new.
    settings = make_settings(
        limits={"queue_capacity": CAPACITY, "per_user": PER_USER, "dedup_window_s": 300}
    )
    users = [f"user{u:03d}" for u in range(USERS)]
    tokens = await make_tokens(redis, users)
    urls = await start_apis(settings, processes, 3)
    plan = burst_plan(users)
    assert len(plan) >= 1000

    async with clients(urls) as https:
        answers = await post_all(https, tokens, plan)

        by_status = Counter(a.status for a in answers)
        odd = [(a.status, a.body) for a in answers if a.status not in (202, 429, 503)]
        assert not odd, (by_status, odd[:3])
        created = first_per_job(answers)
        assert len(created) == CAPACITY
        assert by_status[429] > 0 and by_status[503] > 0, by_status
        # Every process took part in admitting.
        assert {a.api for a in created} == {0, 1, 2}

        for answer in answers:
            if answer.status == 202:
                assert answer.body["status"] == "queued"
                assert 1 <= answer.body["position"] <= CAPACITY
                assert answer.body["estimated_wait_s"] is not None
            else:
                code = "user_limit" if answer.status == 429 else "queue_full"
                assert answer.body["error"]["code"] == code, answer
                assert answer.retry_after is not None and int(answer.retry_after) >= 1

        admitted: dict[str, set[str]] = defaultdict(set)
        for answer in created:
            admitted[answer.user].add(answer.body["job_id"])
        rejections: dict[str, set[int]] = defaultdict(set)
        for answer in answers:
            if answer.status != 202:
                rejections[answer.user].add(answer.status)
        for user in users:
            assert len(admitted[user]) <= PER_USER
            # The user cap is checked first: a user at the cap only ever hears 429; below
            # it, only a full queue can have said no.
            if rejections[user]:
                expected = {429} if len(admitted[user]) == PER_USER else {503}
                assert rejections[user] == expected, (user, len(admitted[user]))

        # The same request sent at once to three processes: admitted once, the same job id.
        by_request: dict[tuple[str, int], list[Answer]] = defaultdict(list)
        for answer in answers:
            by_request[(answer.user, answer.key)].append(answer)
        deduplicated = 0
        for (user, key), group in by_request.items():
            accepted = [a for a in group if a.status == 202]
            if not accepted:
                continue  # all rejected: the caps bound before this request got in
            assert len(accepted) == len(group), (user, key)
            assert len({a.body["job_id"] for a in accepted}) == 1, (user, key)
            fresh = sum(not a.body["deduplicated"] for a in accepted)
            # One answer says created, unless that answer was lost and its resend deduplicated.
            assert fresh == 1 or (fresh == 0 and any(a.resent for a in group)), (user, key)
            deduplicated += len(group) - 1
        assert deduplicated > 0

        # Redis agrees with the answers, slot for slot.
        slots = await assert_every_slot_has_its_job(redis, settings)
        assert slots == {job for jobs in admitted.values() for job in jobs}
        now = await counters(redis, settings, users)
        assert now.inflight == now.owners == now.queued_in_arq == CAPACITY
        assert now.active == 0
        assert now.per_user == {user: len(admitted[user]) for user in users}
        queue = (await https[0].get("/v1/queue")).json()
        assert queue["waiting"] == CAPACITY and queue["state"] == "critical"

        # Now every job ends: half cancelled through the APIs, the rest run by a worker.
        cancelled = [a for a in created if int(a.user[4:]) % 2 == 0]
        replies: list[int] = []

        async def cancel(answer: Answer) -> None:
            url = f"/v1/jobs/{answer.body['job_id']}"
            response = await https[answer.api].delete(url, headers=auth(tokens[answer.user]))
            replies.append(response.status_code)

        await run_lanes(cancelled, cancel, lanes=LANES)
        assert replies == [202] * len(cancelled)
        processes.append(spawn(["worker", "--metrics-port", "0"], settings))

        async def drained() -> bool:
            return (await counters(redis, settings, users)).zero

        await wait_until(drained, 60, "every job to end and release its slot")

    statuses = Counter()
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in sorted(slots):
            pipe.hget(keys.job(job_id), "status")
        for status in await pipe.execute():
            statuses[status.decode()] += 1
    assert statuses == {"cancelled": len(cancelled), "completed": CAPACITY - len(cancelled)}
    # Every per-user set is gone, not merely empty.
    assert await redis.exists(*(keys.user_inflight(u) for u in users)) == 0


# ---- the reconciler -------------------------------------------------------------------------


@pytest.fixture
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    opened = await open_resources(settings)
    yield opened
    await opened.close()


async def submit(resources: Resources, user: str, description: str) -> str:
    request = SpriteRequest.model_validate(sprite_request(description))
    submission = await Producer(resources).submit(user, request)
    return submission.view.job_id


async def test_reconciler_frees_orphaned_slots_and_leaves_healthy_jobs_alone(
    resources: Resources, settings: Settings, redis: aioredis.Redis
) -> None:
    healthy = await submit(resources, "alice", "a healthy knight")
    expired = await submit(resources, "alice", "a knight whose arq job expired")
    finished = await submit(resources, "bob", "a knight finished without release")
    # What an API killed between admit and enqueue would leave, were they two steps: a
    # slot (global, per user, owner) whose job record was never written.
    ghost = "0" * 32
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.INFLIGHT, {ghost: int(time.time() * 1000)})
        pipe.zadd(keys.user_inflight("carol"), {ghost: int(time.time() * 1000)})
        pipe.hset(keys.INFLIGHT_USERS, ghost, "carol")
        # arq's job key expired while the job waited; arq dropped it from its queue.
        pipe.delete(job_key_prefix + expired)
        pipe.zrem(settings.queue_name, expired)
        # Completed and gone from arq, but its slot never released (a bug, or a hand edit).
        pipe.hset(keys.job(finished), "status", "completed")
        pipe.delete(job_key_prefix + finished)
        pipe.zrem(settings.queue_name, finished)
        await pipe.execute()

    reconciler = Reconciler(resources.redis, resources.jobs, settings.jobs)
    assert await reconciler.run_once() == 0  # all younger than the grace period
    later = time.time() + GRACE_S + 1
    # The gone and the finished are freed at once; the lost job is only suspected...
    assert await reconciler.run_once(later) == 2
    assert (await resources.jobs.get(expired)).status is JobStatus.QUEUED  # type: ignore[union-attr]
    # ...and failed when a later run still finds it lost.
    assert await reconciler.run_once(later + CONFIRM_S) == 1
    lost = await resources.jobs.get(expired)
    assert lost is not None and lost.status is JobStatus.FAILED
    assert lost.error is not None and lost.error.type == "internal"
    assert await redis.zscore(keys.DLQ, expired) is not None

    assert await assert_every_slot_has_its_job(redis, settings) == {healthy}
    for user, count in (("alice", 1), ("bob", 0), ("carol", 0)):
        assert await redis.zcard(keys.user_inflight(user)) == count
    assert await reconciler.run_once(later + 2 * CONFIRM_S) == 0
    assert (await resources.jobs.get(healthy)).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert await redis.exists(job_key_prefix + healthy) == 1


async def test_a_cancel_is_one_step_that_leaves_nothing_for_the_reconciler(
    resources: Resources, settings: Settings, redis: aioredis.Redis
) -> None:
    job_id = await submit(resources, "alice", "a knight being cancelled")
    record = await resources.jobs.get(job_id)
    assert record is not None
    cancelled = record.finished_as(JobStatus.CANCELLED, at=time.time())
    written, _ = await resources.jobs.finish(cancelled, guard=Guard.rev(record.rev), keep_s=60)
    assert written is Written.APPLIED
    # Final state, slot and arq's entries went together: no half-cancelled job to repair.
    assert await redis.zscore(settings.queue_name, job_id) is None
    assert await redis.exists(job_key_prefix + job_id) == 0
    reconciler = Reconciler(resources.redis, resources.jobs, settings.jobs)
    later = time.time() + GRACE_S + 1
    assert await reconciler.run_once(later) == 0
    assert await reconciler.run_once(later + CONFIRM_S) == 0
    assert (await resources.jobs.get(job_id)).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert await redis.zcard(keys.DLQ) == 0
    assert await redis.zcard(keys.INFLIGHT) == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_api_killed_mid_burst_leaves_no_slot_without_its_job(
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = make_settings(limits={"queue_capacity": 100_000, "per_user": 10_000})
    users = [f"killer{u}" for u in range(20)]
    tokens = await make_tokens(redis, users)
    victim_url, survivor_url = await start_apis(settings, processes, 2)
    victim = processes[0]
    accepted: list[str] = []

    async with clients([victim_url, survivor_url]) as (to_victim, to_survivor):

        async def one(i: int) -> None:
            if victim.poll() is not None:
                return  # enough: what matters is what was in flight when it died
            user = users[i % len(users)]
            http = to_victim if i % 4 else to_survivor
            body = sprite_request(f"kill burst {i}")
            try:
                response = await http.post("/v1/jobs", json=body, headers=auth(tokens[user]))
            except httpx.TransportError:
                return  # the victim died with this request in hand, or before it
            assert response.status_code == 202, response.text
            accepted.append(response.json()["job_id"])

        burst = asyncio.create_task(run_lanes(list(range(3000)), one, lanes=100))
        await wait_until(_at_least(accepted, 300), 30, "the burst to get going")
        victim.send_signal(signal.SIGKILL)
        await burst
        victim.wait(5)

        # The survivor still admits; the victim's half-done requests left nothing behind.
        extra = await to_survivor.post(
            "/v1/jobs", json=sprite_request("after the kill"), headers=auth(tokens[users[0]])
        )
        assert extra.status_code == 202
        accepted.append(extra.json()["job_id"])

    assert len(accepted) < 3000, "the kill came too late to interrupt anything"
    slots = await assert_every_slot_has_its_job(redis, settings)
    # Any admitted whose answer died with the process are whole jobs; none is half-admitted.
    assert set(accepted) <= slots
    opened = await open_resources(settings)
    try:
        reconciler = Reconciler(opened.redis, opened.jobs, settings.jobs)
        later = time.time() + GRACE_S + 1
        assert await reconciler.run_once(later) == 0
        assert await reconciler.run_once(later + CONFIRM_S) == 0
    finally:
        await opened.close()


def _at_least(items: list[str], count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(items) >= count

    return check


# ---- Redis failing during admission ---------------------------------------------------------


async def test_redis_failure_during_admission_is_a_fast_503_and_records_nothing(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Any],
    tmp_path: Path,
) -> None:
    # A Redis of its own: this test runs it out of memory and stops it.
    with EmbeddedRedis(tmp_path / "valkey", appendonly=True) as own:
        settings = make_settings(redis_url=own.url)
        stack = make_stack(settings, worker=False)
        direct = aioredis.Redis.from_url(own.url)
        try:
            token = await TokenStore(direct).create("alice")
            async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:

                async def post(description: str) -> tuple[httpx.Response, float]:
                    began = time.perf_counter()
                    response = await http.post(
                        "/v1/jobs", json=sprite_request(description), headers=auth(token)
                    )
                    return response, time.perf_counter() - began

                first, _ = await post("before the failure")
                assert first.status_code == 202

                # Redis refuses the admission script itself, everything else still working.
                await direct.acl_setuser("default", commands=["-evalsha", "-eval"])
                try:
                    refused, took = await post("while scripts are refused")
                finally:
                    await direct.acl_setuser("default", commands=["+@all"])
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "unavailable"
                assert refused.headers["retry-after"] and took < 1.0

                # Out of memory with noeviction: reads work (the token, the look-ups) but
                # writes are refused; a script's first write is checked, and one refused
                # there ends the script before it changed anything.
                await direct.config_set("maxmemory", "1")
                try:
                    refused, took = await post("while out of memory")
                finally:
                    await direct.config_set("maxmemory", "0")
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "unavailable"
                assert refused.headers["retry-after"] and took < 1.0
                assert await direct.zcard(keys.INFLIGHT) == 1
                assert await direct.zcard(keys.user_inflight("alice")) == 1
                assert await direct.zcard(settings.queue_name) == 1

                # Redis gone altogether.
                own.stop()
                down, took = await post("while Redis is down")
                assert down.status_code == 503 and took < 1.0
                assert down.json()["error"]["code"] == "unavailable"
                own.start()

                assert await direct.zcard(keys.INFLIGHT) == 1
                assert await direct.hlen(keys.INFLIGHT_USERS) == 1
                again, _ = await post("after the outage")
                assert again.status_code == 202, again.text
                assert await direct.zcard(keys.INFLIGHT) == 2
        finally:
            stack.stop()  # before its Redis goes away for good
            await direct.aclose()


async def test_admit_script_failing_on_bad_input_writes_nothing(
    resources: Resources, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis keeps the writes a script made before an error; the admit script decodes its
    # input before its first write, so a failure there leaves no trace.
    monkeypatch.setattr(jobs_module, "_json", lambda value: "{not json")
    with pytest.raises(ResponseError):
        await submit(resources, "alice", "a knight with a broken record")
    monkeypatch.undo()
    for key in (keys.INFLIGHT, keys.user_inflight("alice"), resources.settings.queue_name):
        assert await redis.zcard(key) == 0
    assert await redis.hlen(keys.INFLIGHT_USERS) == 0
    assert [k async for k in redis.scan_iter(match="sq:dedup:*")] == []
    assert await submit(resources, "alice", "a knight with a good record")


# ---- position, ETA, queue state, Retry-After ------------------------------------------------


async def fake_workers(redis: aioredis.Redis, slots: int, durations: list[float]) -> None:
    """Live-looking worker heartbeats and recent run times, without a worker taking jobs."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.WORKERS, {"fake-worker": int(time.time() * 1000)})
        pipe.hset(keys.worker("fake-worker"), mapping={"concurrency": slots, "running": 0})
        if durations:
            pipe.rpush(keys.DURATIONS, *durations)
        await pipe.execute()


async def test_position_and_eta_for_successive_submissions(
    make_stack: Callable[..., Any], settings: Settings, redis: aioredis.Redis
) -> None:
    await fake_workers(redis, slots=2, durations=[8.0, 10.0, 12.0])  # median 10 s
    users = ["alice", "bob", "carol"]
    tokens = await make_tokens(redis, users)
    stack = make_stack(settings, worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        jobs = []
        for n in range(6):
            user = users[n % 3]
            response = await http.post(
                "/v1/jobs", json=sprite_request(f"queued sprite {n}"), headers=auth(tokens[user])
            )
            assert response.status_code == 202
            jobs.append((user, response.json()))
        positions = [job["position"] for _, job in jobs]
        waits = [job["estimated_wait_s"] for _, job in jobs]
        assert positions == [1, 2, 3, 4, 5, 6]
        # Two free slots take the first two at once; then one 10 s round per two jobs.
        assert waits == [0.0, 0.0, 10.0, 10.0, 20.0, 20.0]
        assert waits == [eta_s(p, 0, 2, 10.0) for p in positions]

        for user, job in jobs:
            polled = await http.get(f"/v1/jobs/{job['job_id']}", headers=auth(tokens[user]))
            assert polled.json()["position"] == job["position"]
            assert polled.json()["estimated_wait_s"] == job["estimated_wait_s"]

        queue = (await http.get("/v1/queue")).json()
        assert queue == {"waiting": 6, "active": 0, "capacity": 500, "state": "ok",
                         "estimated_wait_s": 30.0,
                         "upstream": {"state": "ok", "reason": None, "since": None}}  # fmt: skip

        async def place(user: str, job: dict[str, Any]) -> tuple[int, float]:
            body = (await http.get(f"/v1/jobs/{job['job_id']}", headers=auth(tokens[user]))).json()
            return body["position"], body["estimated_wait_s"]

        # The first one leaves: within one announce interval everyone behind moves up one.
        first_user, first = jobs[0]
        await http.delete(f"/v1/jobs/{first['job_id']}", headers=auth(tokens[first_user]))
        deadline = time.monotonic() + 5
        while await place(*jobs[-1]) != (5, 20.0):
            assert time.monotonic() < deadline, await place(*jobs[-1])
            await asyncio.sleep(0.05)
        assert [await place(user, job) for user, job in jobs[1:]] == [
            (1, 0.0), (2, 0.0), (3, 10.0), (4, 10.0), (5, 20.0)
        ]  # fmt: skip


async def test_queue_state_thresholds_and_rejections_with_retry_after(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Any],
    redis: aioredis.Redis,
) -> None:
    settings = make_settings(limits={"queue_capacity": 10, "warning_at": 8})
    await fake_workers(redis, slots=2, durations=[30.0, 30.0, 40.0])  # median 30 s
    tokens = await make_tokens(redis, ["alice", "bob", "carol"])
    stack = make_stack(settings, worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        states = []
        for n in range(10):
            user = "alice" if n % 2 else "bob"
            response = await http.post(
                "/v1/jobs", json=sprite_request(f"state sprite {n}"), headers=auth(tokens[user])
            )
            assert response.status_code == 202
            states.append((await http.get("/v1/queue")).json()["state"])
        assert states == ["ok"] * 7 + ["warning"] * 2 + ["critical"]

        # Both alice and the queue are full; her own cap is what holds her back.
        mine = await http.post(
            "/v1/jobs", json=sprite_request("one more"), headers=auth(tokens["alice"])
        )
        assert mine.status_code == 429 and mine.json()["error"]["code"] == "user_limit"
        assert mine.headers["retry-after"] == "30"  # the median run time
        full = await http.post(
            "/v1/jobs", json=sprite_request("one more"), headers=auth(tokens["carol"])
        )
        assert full.status_code == 503 and full.json()["error"]["code"] == "queue_full"
        # Two jobs run at a time, each about 30 s: one ends about every 15 s.
        assert full.headers["retry-after"] == "15"

        queue = (await http.get("/v1/queue")).json()
        assert (queue["waiting"], queue["capacity"], queue["state"]) == (10, 10, "critical")


async def test_user_limit_retry_after_follows_the_users_own_jobs(
    resources: Resources, settings: Settings, redis: aioredis.Redis
) -> None:
    await fake_workers(redis, slots=1, durations=[30.0])
    estimates = resources.estimates
    ahead = [await submit(resources, "bob", f"bob's sprite {n}") for n in range(3)]
    mine = await submit(resources, "alice", "alice's sprite")
    # alice's job waits behind three with one slot: ETA ceil(4 - 1) * 30 = 90, then its run.
    assert await estimates.retry_after_s(user_limit=True, user="alice") == 120
    # Once it has run 10 s, it should end in about 20.
    await redis.zadd(keys.ACTIVE, {mine: int((time.time() - 10) * 1000)})
    assert await estimates.retry_after_s(user_limit=True, user="alice") == 20
    # Without the user, the median run time.
    assert await estimates.retry_after_s(user_limit=True) == 30
    assert ahead
