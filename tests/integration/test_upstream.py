"""PixelLab protected: a global call cap, 429s as backpressure, a pause on 401/402 with a
probe and an admin resume. Real Redis, real workers, the mock PixelLab over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from backend.config import Settings
from backend.store import keys
from fixtures.factories import auth, sprite_request, wait_for_status, wait_until
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import WorkerThread
from tests.conftest import Stack

FINAL = {"completed", "failed", "cancelled"}
pytestmark = pytest.mark.slow


async def submit_many(
    http: httpx.AsyncClient, tokens: dict[str, str], texts: list[str]
) -> list[tuple[str, str]]:
    users = [tokens["alice"], tokens["bob"]]
    jobs = []
    for n, text in enumerate(texts):
        token = users[n % 2]
        response = await http.post("/v1/jobs", json=sprite_request(text), headers=auth(token))
        assert response.status_code == 202, response.text
        jobs.append((token, response.json()["job_id"]))
    return jobs


async def all_final(
    http: httpx.AsyncClient, jobs: list[tuple[str, str]], timeout_s: float
) -> list[dict[str, Any]]:
    return list(await asyncio.gather(
        *(wait_for_status(http, job, token, FINAL, timeout_s=timeout_s) for token, job in jobs)
    ))  # fmt: skip


async def mock_stats(http: httpx.AsyncClient, mock: ThreadedUvicorn) -> dict[str, Any]:
    stats: dict[str, Any] = (await http.get(mock.url + "/_mock/stats")).json()
    return stats


async def set_scenario(http: httpx.AsyncClient, mock: ThreadedUvicorn, scenario: str) -> None:
    response = await http.post(mock.url + "/_mock/scenario", json={"scenario": scenario})
    assert response.status_code == 200


async def upstream(http: httpx.AsyncClient) -> dict[str, Any]:
    state: dict[str, Any] = (await http.get("/v1/queue")).json()["upstream"]
    return state


@pytest.mark.timeout(60)
async def test_calls_at_once_never_exceed_the_cap_across_two_workers(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    mock_pixellab: ThreadedUvicorn,
) -> None:
    settings = make_settings(pixellab={"max_concurrency": 3}, limits={"per_user": 20})
    stack = make_stack(settings)
    with WorkerThread(settings):  # a second worker process' worth of slots
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
            texts = [f"a capped sprite {n} [mock-latency:600]" for n in range(12)]
            views = await all_final(http, await submit_many(http, tokens, texts), 40)
            stats = await mock_stats(http, mock_pixellab)
    assert [v["status"] for v in views] == ["completed"] * 12
    assert stats["generations"] == 12
    assert stats["peak_in_flight"] == 3, stats["peak_in_flight"]  # the cap, and no more


@pytest.mark.timeout(90)
async def test_a_429_storm_completes_every_job_with_an_empty_dlq(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    mock_pixellab: ThreadedUvicorn,
    redis: aioredis.Redis,
) -> None:
    # Each prompt is throttled three times (Retry-After: 1) before it succeeds, with the
    # default single retry: 429s are backpressure, not failures.
    stack = make_stack(make_settings(limits={"per_user": 20}))
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        texts = [f"a throttled sprite {n} [mock-fail:429*3]" for n in range(6)]
        jobs = await submit_many(http, tokens, texts)

        async def throttled() -> bool:
            return (await upstream(http))["state"] == "throttled"

        await wait_until(throttled, 10, "the upstream to be throttled")
        views = await all_final(http, jobs, 60)
        stats = await mock_stats(http, mock_pixellab)
    assert [v["status"] for v in views] == ["completed"] * 6
    assert await redis.zcard(keys.DLQ) == 0
    for text in texts:
        assert stats["calls"][text] == {"answered:429": 3, "answered:200": 1}


async def wait_paused(http: httpx.AsyncClient, reason: str) -> None:
    async def paused() -> bool:
        state = await upstream(http)
        return state["state"] == "paused" and state["reason"] == reason

    await wait_until(paused, 10, f"the upstream to pause for {reason}")


@pytest.mark.timeout(60)
async def test_402_pauses_calls_and_a_probe_resumes_them(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    mock_pixellab: ThreadedUvicorn,
    redis: aioredis.Redis,
) -> None:
    stack = make_stack(make_settings(pixellab={"probe_interval_s": 0.3}))
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        await set_scenario(http, mock_pixellab, "insufficient_credits")
        texts = [f"an unpaid sprite {n}" for n in range(3)]
        jobs = await submit_many(http, tokens, texts)
        await wait_paused(http, "insufficient_credits")
        calls_when_paused = (await mock_stats(http, mock_pixellab))["generations"]
        await asyncio.sleep(1.5)  # paused: probes, but no new generation
        stats = await mock_stats(http, mock_pixellab)
        assert stats["generations"] == calls_when_paused, stats  # only calls already in flight
        assert stats["balance_checks"] >= 2, stats
        views = [await wait_for_status(http, j, t, {"queued"}) for t, j in jobs]
        assert all(v["error"] is None or v["error"]["type"] == "insufficient_credits"
                   for v in views)  # fmt: skip
        await set_scenario(http, mock_pixellab, "success")  # credit bought
        done = await all_final(http, jobs, 20)
        assert (await upstream(http))["state"] == "ok"
    assert [v["status"] for v in done] == ["completed"] * 3
    assert await redis.zcard(keys.DLQ) == 0


@pytest.mark.timeout(60)
async def test_401_pauses_until_an_admin_resumes(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    mock_pixellab: ThreadedUvicorn,
    redis: aioredis.Redis,
) -> None:
    stack = make_stack(make_settings(pixellab={"probe_interval_s": 0.3}))
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        await set_scenario(http, mock_pixellab, "auth_error")
        jobs = await submit_many(http, tokens, ["a locked-out sprite 1", "a locked-out sprite 2"])
        await wait_paused(http, "auth")
        calls_when_paused = (await mock_stats(http, mock_pixellab))["generations"]
        await asyncio.sleep(1.0)  # the probe meets 401 too: still paused, no new generation
        assert (await upstream(http))["state"] == "paused"
        assert (await mock_stats(http, mock_pixellab))["generations"] == calls_when_paused
        refused = await http.post("/v1/admin/upstream/resume", headers=auth(tokens["alice"]))
        assert refused.status_code == 403
        # The key is fixed at PixelLab's side; the admin does not wait for the next probe.
        await set_scenario(http, mock_pixellab, "success")
        await redis.set(keys.PROBE_TICK, "held by the test", px=60_000)  # no probe meanwhile
        resumed = await http.post("/v1/admin/upstream/resume", headers=auth(tokens["admin"]))
        assert resumed.status_code == 200 and resumed.json()["state"] == "ok"
        done = await all_final(http, jobs, 20)
    assert [v["status"] for v in done] == ["completed"] * 2
    assert await redis.zcard(keys.DLQ) == 0


@pytest.mark.timeout(60)
async def test_the_balance_a_worker_reads_is_in_the_admin_view(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    mock_pixellab: ThreadedUvicorn,
    redis: aioredis.Redis,
) -> None:
    stack = make_stack(make_settings(pixellab={"balance_interval_s": 0.3}))
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        refused = await http.get("/v1/admin/upstream", headers=auth(tokens["alice"]))
        assert refused.status_code == 403

        async def read() -> bool:
            view = (await http.get("/v1/admin/upstream", headers=auth(tokens["admin"]))).json()
            return view["balance"] is not None

        await wait_until(read, 10, "a worker to record the balance")
        view = (await http.get("/v1/admin/upstream", headers=auth(tokens["admin"]))).json()
        stats = await mock_stats(http, mock_pixellab)
    assert view["state"] == "ok"
    assert view["balance"]["usd"] > 0
    assert abs(view["balance"]["checked_at"] - time.time()) < 10
    assert stats["balance_checks"] >= 1
    assert await redis.pttl(keys.BALANCE_TICK) > 0  # one reader per interval, deployment-wide
