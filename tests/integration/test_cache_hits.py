"""A cache hit served in the caller's round trip (``resolveSubmit``): what it writes, what
it counts and when, and what still comes before it (issue 17: ≤ 2 round trips a hit)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio as aioredis

from backend.config import Settings
from backend.store import keys
from fixtures.factories import auth, cache_sprite, sprite_request, wait_until
from tests.conftest import Stack


async def hits_in_l1(redis: aioredis.Redis, key: str) -> int:
    return int(await redis.hget(keys.cache(key), "hit_count") or 0)  # type: ignore[misc]


async def test_a_hit_is_counted_only_when_it_answers_a_caller_it_may(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    stack = make_stack(make_settings(limits={"submits_per_minute": 2}), worker=False)
    body = sprite_request("a counted lantern")
    key = await cache_sprite(redis, body)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        stranger = await http.post("/v1/jobs", json=body, headers=auth("sq_not-a-token"))
        answers = [
            await http.post("/v1/jobs", json=body, headers=auth(tokens["bob"])) for _ in range(3)
        ]
        served = [answer.json() for answer in answers[:2]]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert all(view["cached"] and view["status"] == "completed" for view in served)
        polled = await http.get(f"/v1/jobs/{served[0]['job_id']}", headers=auth(tokens["bob"]))
    assert stranger.status_code == 401
    assert polled.status_code == 200 and polled.json()["result"] == served[0]["result"]

    # The two served hits reach L1 with the process's next flush (about a second)...
    await wait_until(lambda: _equals(hits_in_l1(redis, key), 2), 5, "the hits were counted")
    await asyncio.sleep(1.5)
    # ... and the unknown caller and the one over their rate were never counted or written.
    assert await hits_in_l1(redis, key) == 2
    assert await redis.hget(keys.STATS, "cache_hits") == b"2"  # type: ignore[misc]
    bobs_jobs = await redis.zrange(keys.user_jobs("bob"), 0, -1)
    assert sorted(job.decode() for job in bobs_jobs) == sorted(v["job_id"] for v in served)
    stored = await redis.hget(keys.job(served[0]["job_id"]), "user")  # type: ignore[misc]
    assert stored == b"bob"


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_the_dedup_window_comes_before_a_hit_unless_its_job_was_cancelled(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    stack = make_stack(make_settings(), worker=False)
    body, alice = sprite_request("a lantern asked twice"), auth(tokens["alice"])
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        first = await http.post("/v1/jobs", json=body, headers=alice)
        assert first.status_code == 202, first.text
        job_id = first.json()["job_id"]
        await cache_sprite(redis, body)  # e.g. another user's job drew it meanwhile

        again = await http.post("/v1/jobs", json=body, headers=alice)
        assert again.status_code == 202
        assert again.json()["job_id"] == job_id and again.json()["deduplicated"] is True

        cancelled = await http.delete(f"/v1/jobs/{job_id}", headers=alice)
        assert cancelled.status_code in (200, 202), cancelled.text
        third = await http.post("/v1/jobs", json=body, headers=alice)

    assert third.status_code == 200, third.text
    assert third.json()["cached"] is True and third.json()["job_id"] != job_id


async def test_an_api_stopping_counts_the_hits_it_served_last(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    stack = make_stack(make_settings(), worker=False)
    body = sprite_request("a lantern served at closing time")
    key = await cache_sprite(redis, body)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        answer = await http.post("/v1/jobs", json=body, headers=auth(tokens["bob"]))
    assert answer.status_code == 200

    stack.stop()  # within the second: the last flush is the shutdown's

    assert await hits_in_l1(redis, key) == 1
