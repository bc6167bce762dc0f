"""Per-user limits over a real stack: the submit rate and the daily generation quota."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio as aioredis

from backend.config import Settings
from backend.store import keys
from backend.store.quotas import QUOTA_KEEP_S, quota_key, seconds_to_utc_midnight
from fixtures.factories import auth, sprite_request, wait_for_status
from tests.conftest import Stack

FINAL = {"completed", "failed", "cancelled"}
# Background writers that come and go on their own (the positions turn, heartbeats).
MOVING = {keys.POSITIONS_TICK.encode()}


async def key_set(redis: aioredis.Redis) -> set[bytes]:
    """Every key (a test may SCAN; the service never does)."""
    return {key async for key in redis.scan_iter(count=1000)} - MOVING


async def used_memory(redis: aioredis.Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def test_a_loop_on_a_cached_prompt_is_cut_off_and_refusals_write_nothing(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    # A dedup window of 1 ms: every repeat below is a cache hit, the cheapest submission.
    settings = make_settings(limits={"submits_per_minute": 60, "dedup_window_s": 0.001})
    stack = make_stack(settings)
    token, body = tokens["alice"], sprite_request("a looping slime")
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        first = await http.post("/v1/jobs", json=body, headers=auth(token))
        assert first.status_code == 202
        done = await wait_for_status(http, first.json()["job_id"], token, FINAL)
        assert done["status"] == "completed"
        stack.stop_worker()  # nothing else writes while the loop runs

        answers: list[httpx.Response] = []
        before: tuple[set[bytes], int, int] | None = None
        for _ in range(149):
            if len(answers) == 59:  # the 60th submission of the minute is in: measure now
                before = (await key_set(redis), await used_memory(redis),
                          await redis.zcard(keys.user_jobs("alice")))  # fmt: skip
            answers.append(await http.post("/v1/jobs", json=body, headers=auth(token)))
        after = (await key_set(redis), await used_memory(redis),
                 await redis.zcard(keys.user_jobs("alice")))  # fmt: skip

    codes = [answer.status_code for answer in answers]
    assert codes == [200] * 59 + [429] * 90, codes
    assert all(answer.json()["cached"] for answer in answers[:59])
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # 90 refused cache hits wrote nothing: the same keys, the same job index, the same count,
    # and no memory beyond noise (90 cache hits would take ~200 KB: a record and a stream each).
    assert before is not None
    assert after[0] == before[0]
    assert after[2] == before[2] == 60
    assert int(await redis.get(keys.user_submits("alice")) or 0) == 60
    assert after[1] - before[1] < 32 * 1024, after[1] - before[1]
    # Another user is not held back by alice's loop.
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        other = await http.post("/v1/jobs", json=body, headers=auth(tokens["bob"]))
        assert other.status_code == 200 and other.json()["cached"]


async def submit(http: httpx.AsyncClient, token: str, description: str) -> httpx.Response:
    return await http.post("/v1/jobs", json=sprite_request(description), headers=auth(token))


async def test_daily_quota_counts_generations_not_cache_hits_and_refunds_a_cancel(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    settings = make_settings(limits={"daily_generations": 2, "dedup_window_s": 0.001})
    stack = make_stack(settings)
    token = tokens["alice"]
    counter = quota_key("alice", time.time())
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        first = await submit(http, token, "a quota knight")  # generation 1
        assert first.status_code == 202
        done = await wait_for_status(http, first.json()["job_id"], token, FINAL)
        assert done["status"] == "completed"
        stack.stop_worker()  # the next jobs stay queued: cancelled before their call

        second = await submit(http, token, "a quota archer")  # generation 2
        assert second.status_code == 202
        third = await submit(http, token, "a quota mage")  # the N+1th: refused
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "quota_exceeded"
        to_midnight = seconds_to_utc_midnight(time.time())
        assert abs(int(third.headers["retry-after"]) - to_midnight) <= 5
        assert await redis.get(counter) == b"2"
        assert 0 < await redis.ttl(counter) <= QUOTA_KEEP_S

        # A cache hit is free, even with the quota spent.
        hit = await submit(http, token, "a quota knight")
        assert hit.status_code == 200 and hit.json()["cached"]
        # Another user's quota is their own.
        assert (await submit(http, tokens["bob"], "a quota mage")).status_code == 202

        # Cancelled before its call: the generation is given back, once.
        cancel = await http.delete(f"/v1/jobs/{second.json()['job_id']}", headers=auth(token))
        assert cancel.status_code == 202
        assert await redis.get(counter) == b"1"
        again = await http.delete(f"/v1/jobs/{second.json()['job_id']}", headers=auth(token))
        assert again.status_code == 409
        assert await redis.get(counter) == b"1"

        assert (await submit(http, token, "a quota mage")).status_code == 202
        refused: Any = await submit(http, token, "a quota thief")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
        # A refusal writes no job.
        assert await redis.zcard(keys.user_jobs("alice")) == 4
