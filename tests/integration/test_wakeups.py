"""What a message on ``sq:wake`` wakes, over a real Redis: the poll loop for work, the
deliverer for a webhook, the look for deferred jobs only after a requeue, arq's abort set
only after an abort (issue 17: wake, don't poll)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import redis.asyncio as aioredis

from backend.config import Settings
from backend.queue.wakeups import ABORT, POLL, REQUEUE, Wakeups
from backend.store import keys
from fixtures.factories import auth, sprite_request, wait_until
from tests.conftest import Stack


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


async def test_a_named_job_is_kept_for_the_claim_and_unnamed_work_asks_for_a_poll(
    redis: aioredis.Redis, wakeups: tuple[Wakeups, list[str]]
) -> None:
    woken, _ = wakeups
    assert woken.take(POLL)  # the subscription: anything may have been missed
    await redis.publish(keys.WAKE_CHANNEL, "job j-1")
    await redis.publish(keys.WAKE_CHANNEL, "job j-2")
    named: list[str] = []
    for _ in range(100):
        if await woken.wait(5):
            named += woken.take_jobs()
        if len(named) == 2:
            break
    assert named == ["j-1", "j-2"] and woken.take_jobs() == []
    assert not woken.take(POLL)  # named work needs no read of the queue
    for unnamed in ("job", "requeue", "permit"):  # a group, a requeue, a freed permit
        await redis.publish(keys.WAKE_CHANNEL, unnamed)
        assert await woken.wait(5)
        assert woken.take(POLL), unnamed
        assert woken.take_jobs() == []


async def test_an_idle_worker_claims_the_job_its_wake_up_names_without_a_poll_first(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    """The wake-up names the job, and the idle worker claims it without reading the queue,
    before or after: before, the wake-up started a poll (a ZRANGEBYSCORE of the queue) and
    the claim followed it."""
    settings = make_settings(worker={"idle_poll_s": 3600, "heartbeat_s": 3600})
    stack = make_stack(settings)

    async def worker_up() -> bool:
        return bool(await redis.exists(keys.WORKERS))

    await wait_until(worker_up, 30, "the worker's first heartbeat")
    await asyncio.sleep(0.5)  # past the worker's first polls
    commands: list[str] = []
    async with redis.monitor() as monitor:

        async def record() -> None:
            while True:
                commands.append((await monitor.next_command())["command"])

        recording = asyncio.create_task(record())
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
            answer = await http.post(
                "/v1/jobs", json=sprite_request("a named wren"), headers=auth(tokens["alice"])
            )
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]

            async def completed() -> bool:
                return await redis.hget(keys.job(job_id), "status") == b"completed"  # type: ignore[misc]

            await wait_until(completed, 10, "the job to complete")
        recording.cancel()
    admitted = next(i for i, c in enumerate(commands) if job_id in c)
    after = commands[admitted + 1 :]
    assert any(f"arq:in-progress:{job_id}" in c for c in after)  # claimed, by claimJob
    poll = f"ZRANGEBYSCORE {settings.queue_name} -inf"
    assert not [c for c in after if c.startswith(poll)], after
