"""Priorities over the real stack: a high job jumps the low ones, aging lifts a low job, the
pickup order is exact across several workers, and only entitled tokens may ask for high."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from backend.config import Settings
from backend.store.tokens import TokenStore
from fixtures.factories import auth, sprite_request, wait_for_status
from fixtures.stack import WorkerThread
from tests.conftest import Stack


async def submit(http: httpx.AsyncClient, token: str, description: str, **fields: Any) -> dict:
    response = await http.post(
        "/v1/jobs", json=sprite_request(description, **fields), headers=auth(token)
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def started_at(http: httpx.AsyncClient, token: str, job_ids: list[str]) -> dict[str, float]:
    done = [await wait_for_status(http, j, token, {"completed"}, timeout_s=30) for j in job_ids]
    return {body["job_id"]: body["started_at"] for body in done}


@pytest.fixture
async def studio(redis: aioredis.Redis) -> str:
    """A token that may submit high-priority jobs."""
    return await TokenStore(redis).create("studio", high_priority=True)


async def test_a_high_job_runs_before_three_low_ones_that_came_first(
    make_settings: Callable[..., Settings], make_stack: Callable[..., Stack], studio: str
) -> None:
    stack = make_stack(make_settings(worker={"max_jobs": 1}))
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        busy = await submit(http, studio, "a busy anvil [mock-latency:1500]")
        await wait_for_status(http, busy["job_id"], studio, {"active"})
        lows = [
            await submit(http, studio, f"a low lamp {i} [mock-latency:100]", priority="low")
            for i in range(3)
        ]
        high = await submit(http, studio, "a high hawk [mock-latency:100]", priority="high")
        # Its place counts only what runs before it: nothing is queued ahead.
        assert (high["position"], high["priority"]) == (1, "high")
        assert [low["position"] for low in lows] == [1, 2, 3]
        low_ids = [low["job_id"] for low in lows]
        starts = await started_at(http, studio, [high["job_id"], *low_ids])
    order = sorted(starts, key=starts.__getitem__)
    assert order == [high["job_id"], *low_ids]


async def test_aging_lifts_a_low_job_above_a_younger_normal_one(
    make_settings: Callable[..., Settings], make_stack: Callable[..., Stack], studio: str
) -> None:
    settings = make_settings(worker={"max_jobs": 1}, jobs={"priority_aging_s": 1.0})
    stack = make_stack(settings)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        busy = await submit(http, studio, "a busy bellows [mock-latency:2500]")
        await wait_for_status(http, busy["job_id"], studio, {"active"})
        old_low = await submit(http, studio, "an old low lantern", priority="low")
        await asyncio.sleep(1.3)  # longer than the aging: it now ranks as a normal job
        fresh_normal = await submit(http, studio, "a fresh normal newt")
        fresh_low = await submit(http, studio, "a fresh low lizard", priority="low")
        assert fresh_normal["position"] == 2  # behind the aged low job
        ids = [old_low["job_id"], fresh_normal["job_id"], fresh_low["job_id"]]
        starts = await started_at(http, studio, ids)
    assert sorted(starts, key=starts.__getitem__) == ids


async def test_pickup_order_is_exact_across_several_workers(
    make_settings: Callable[..., Settings], make_stack: Callable[..., Stack], studio: str
) -> None:
    """Twelve jobs of mixed priorities queued before any worker runs, then three workers of
    one slot each: every job starts in a wave no earlier than any job ranked ahead of it."""
    settings = make_settings(worker={"max_jobs": 1}, limits={"per_user": 20})
    stack = make_stack(settings, worker=False)
    priorities = [
        "low",
        "normal",
        "high",
        "low",
        "high",
        "normal",
        "normal",
        "low",
        "high",
        "low",
        "normal",
        "high",
    ]
    level = {"high": 0, "normal": 1, "low": 2}
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        jobs = [
            await submit(http, studio, f"an ordered ox {i} [mock-latency:400]", priority=p)
            for i, p in enumerate(priorities)
        ]
        expected = [
            job["job_id"]
            for _, job in sorted(
                enumerate(jobs), key=lambda item: (level[priorities[item[0]]], item[0])
            )
        ]
        # Their places at admission already follow that order.
        positions = {job["job_id"]: job["position"] for job in jobs}
        assert positions[expected[0]] == 1
        workers = [WorkerThread(settings).start() for _ in range(3)]
        try:
            starts = await started_at(http, studio, expected)
        finally:
            for worker in workers:
                worker.stop()
    # Three slots: the jobs start in waves of three, 400 ms apart. A job may start within
    # its wave in any order (three workers claim at once), never a wave before a job ahead.
    for ahead, behind in zip(expected, expected[3:], strict=False):
        assert starts[ahead] < starts[behind], (ahead, behind)
    for index, job_id in enumerate(expected):
        for earlier in expected[:index]:
            assert starts[earlier] <= starts[job_id] + 0.2, (earlier, job_id)


async def test_only_entitled_tokens_may_ask_for_high(
    stack: Stack, tokens: dict[str, str], studio: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        refused = await http.post(
            "/v1/jobs",
            json=sprite_request("a bold bee", priority="high"),
            headers=auth(tokens["alice"]),
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        for token, who in ((tokens["admin"], "admin"), (studio, "studio")):
            # A prompt of its own: the first job may already be done, and a repeat a cache hit.
            body = await submit(http, token, f"a bold bee for the {who}", priority="high")
            assert body["priority"] == "high"
        low = await submit(http, tokens["alice"], "a modest moth", priority="low")
        assert low["priority"] == "low"
        bad = await http.post(
            "/v1/jobs",
            json=sprite_request("a bad bat", priority="urgent"),
            headers=auth(tokens["alice"]),
        )
        assert bad.status_code == 422
