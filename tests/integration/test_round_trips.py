"""Redis round trips on the API's hot paths, counted on a real link (issue 17's budget:
≤ 3 per cache-miss submit; a status poll in one). Counts, not timings: a Redis client waits
for each reply before it sends again, so the requests the link forwards are round trips."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import redis.asyncio as aioredis

from backend.cache import CachedImage
from backend.cache.redis_l1 import RedisL1
from backend.config import Settings
from backend.embedded_redis import EmbeddedRedis
from backend.store import keys
from fixtures.factories import auth, sprite_request
from fixtures.netproxy import SlowLink
from mocks.png import sprite_png
from tests.conftest import Stack


async def trips(link: SlowLink, action: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
    before = link.requests
    result = await action()
    return link.requests - before, result


async def test_a_submission_and_a_poll_stay_within_their_round_trips(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    with SlowLink(redis_server.port, 0.0) as link:
        # No position announcer in the window counted (it ticks once a second otherwise).
        # The production defaults for the submit rate and the daily quota: both counted.
        settings = make_settings(
            redis_url=link.url, jobs={"position_interval_s": 3600},
            limits={"submits_per_minute": 60, "daily_generations": 100},
        )  # fmt: skip
        api = make_stack(settings, worker=False)
        alice = auth(tokens["alice"])
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:

            async def post(description: str, headers: dict[str, str]) -> httpx.Response:
                return await http.post(
                    "/v1/jobs", json=sprite_request(description), headers=headers
                )

            await post("a warm-up wolf", alice)  # per-process caches (rates, replicas) filled
            miss_trips, miss = await trips(link, lambda: post("a counted wolf", alice))
            assert miss.status_code == 202, miss.text
            job_id = miss.json()["job_id"]
            poll_trips, poll = await trips(
                link, lambda: http.get(f"/v1/jobs/{job_id}", headers=alice)
            )
            assert poll.status_code == 200
            dedup_trips, again = await trips(link, lambda: post("a counted wolf", alice))
            assert again.json()["deduplicated"] is True and again.json()["job_id"] == job_id

            stored = await redis.hget(keys.job(job_id), "cache_key")  # type: ignore[misc]
            assert stored is not None
            image = CachedImage.new(stored.decode(), sprite_png(64, 64, b"wolf"), width=64,
                                    height=64, request={})  # fmt: skip
            await RedisL1(redis, ttl_s=60).put(image)
            hit_trips, hit = await trips(link, lambda: post("a counted wolf", auth(tokens["bob"])))
            assert hit.status_code == 200 and hit.json()["cached"] is True
    # caller + rate + dedup window, the cache's answer, the admission (with the miss counted)
    assert miss_trips <= 3, miss_trips
    assert poll_trips == 1, poll_trips
    # caller + rate + dedup window, then the job it names
    assert dedup_trips <= 2, dedup_trips
    # caller + rate + dedup window, the cache's answer with the hit counted, the finished job
    assert hit_trips <= 3, hit_trips
    misses = await redis.hget(keys.STATS, "cache_misses")  # type: ignore[misc]
    assert int(misses or 0) == 2  # counted by admitJob
