"""Redis round trips on the API's and the worker's hot paths, counted on a real link
(issue 17's budget: ≤ 3 per cache-miss submit, ≤ 2 per cache hit; a status poll in one;
≤ 6 per job in the worker). Counts, not timings: a Redis client waits
for each reply before it sends again, so the requests the link forwards are round trips."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import redis.asyncio as aioredis

from backend.cache import CachedImage
from backend.cache.redis_l1 import RedisL1
from backend.config import Settings
from backend.embedded_redis import EmbeddedRedis
from backend.store import keys
from fixtures.factories import auth, sprite_request, wait_until
from fixtures.netproxy import SlowLink
from fixtures.stack import start_worker
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
    # L1's answer, caller + rate + dedup window, the admission (with the miss counted)
    assert miss_trips <= 3, miss_trips
    assert poll_trips == 1, poll_trips
    # L1's answer, caller + rate + dedup window with the job it names
    assert dedup_trips <= 2, dedup_trips
    # L1's answer (nothing counted yet), caller + rate + dedup window with the finished job
    # written; the hit is added to L1 with the process's others, about once a second
    assert hit_trips <= 2, hit_trips
    misses = await redis.hget(keys.STATS, "cache_misses")  # type: ignore[misc]
    assert int(misses or 0) == 2  # counted by admitJob


async def test_a_job_in_the_worker_stays_within_its_round_trips(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tokens: dict[str, str],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    # The API straight to Redis; the worker through the counting link, its background loops
    # (heartbeat, positions, leases, probes, the fallback poll) slowed out of the window.
    # Per job: the claim of the job the wake-up names (with arq's payload and our record),
    # the start (with the flight lock), the cache look-up, the cache write, the landing
    # (stage 90, lock, permit and completion together): 5. Before: 9 (arq's payload read,
    # a separate flight lock and completion, a second poll and a look for deferred jobs
    # after each), then 6 (a poll of the queue before each claim).
    quiet = {"position_interval_s": 3600, "lease_s": 600}
    api = make_stack(make_settings(jobs=quiet), worker=False)
    jobs = 10
    with SlowLink(redis_server.port, 0.0) as link:
        start_worker(
            make_settings(
                redis_url=link.url, jobs=quiet,
                worker={"heartbeat_s": 3600, "idle_poll_s": 3600},
                pixellab={"probe_interval_s": 3600, "balance_interval_s": 3600},
            ),
            processes,
        )  # fmt: skip

        async def worker_up() -> bool:
            return bool(await redis.exists(keys.WORKERS))

        await wait_until(worker_up, 30, "the worker's first heartbeat")
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:

            async def run_one(description: str) -> None:
                answer = await http.post(
                    "/v1/jobs", json=sprite_request(description), headers=auth(tokens["alice"])
                )
                assert answer.status_code == 202, answer.text
                job_key = keys.job(answer.json()["job_id"])

                async def completed() -> bool:
                    status = await redis.hget(job_key, "status")  # type: ignore[misc]
                    return status == b"completed"

                await wait_until(completed, 10, f"{description} to complete")

            await run_one("a warm-up heron")  # first looks (deferred jobs, replicas) made
            await asyncio.sleep(0.5)
            before = link.requests
            for n in range(jobs):
                await run_one(f"a counted heron {n}")
            await asyncio.sleep(0.3)  # a late round trip of the last job is counted too
            spent = link.requests - before
    # Two for what ticks on its own in the window (a replicas probe every 2 s, a reconcile).
    assert spent <= 5 * jobs + 2, spent / jobs
