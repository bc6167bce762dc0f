"""Variants over the real stack: one submission, a group of jobs with consecutive seeds and
distinct images, admitted all or nothing, shown together by ``GET /v1/groups/{id}``."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import redis.asyncio as aioredis

from backend.config import Settings
from backend.store import keys
from fixtures.factories import auth, sprite_request, wait_for_status
from tests.conftest import Stack


async def seed_of(redis: aioredis.Redis, job_id: str) -> int:
    request = json.loads(await redis.hget(keys.job(job_id), "request"))  # type: ignore[misc]
    return int(request["seed"])


async def test_four_variants_give_four_jobs_seeds_and_images(
    stack: Stack, client: httpx.AsyncClient, tokens: dict[str, str], redis: aioredis.Redis
) -> None:
    alice = tokens["alice"]
    response = await client.post(
        "/v1/jobs", headers=auth(alice), json=sprite_request("a varied viper", variants=4, seed=7)
    )
    assert response.status_code == 202, response.text
    body = response.json()
    group_id, jobs = body["group_id"], body["jobs"]
    assert response.headers["location"] == f"/v1/groups/{group_id}"
    assert len({job["job_id"] for job in jobs}) == 4
    assert all(job["group_id"] == group_id for job in jobs)
    assert [await seed_of(redis, job["job_id"]) for job in jobs] == [7, 8, 9, 10]
    done = [await wait_for_status(client, job["job_id"], alice, {"completed"}) for job in jobs]
    assert len({view["result"]["sha256"] for view in done}) == 4

    group = await client.get(f"/v1/groups/{group_id}", headers=auth(alice))
    assert group.status_code == 200
    assert [job["job_id"] for job in group.json()["jobs"]] == [job["job_id"] for job in jobs]
    assert {job["status"] for job in group.json()["jobs"]} == {"completed"}
    # Owner only (admins may read any, as for jobs); another user's group reads as missing.
    assert (
        await client.get(f"/v1/groups/{group_id}", headers=auth(tokens["bob"]))
    ).status_code == 404
    assert (
        await client.get(f"/v1/groups/{group_id}", headers=auth(tokens["admin"]))
    ).status_code == 200
    assert (await client.get("/v1/groups/nope", headers=auth(alice))).status_code == 404


async def test_random_seeds_are_distinct_too(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    redis: aioredis.Redis,
) -> None:
    stack = make_stack(make_settings(), worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        body = (
            await http.post(
                "/v1/jobs",
                headers=auth(tokens["alice"]),
                json=sprite_request("a random rat", variants=3),
            )
        ).json()
    seeds = [await seed_of(redis, job["job_id"]) for job in body["jobs"]]
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]
    assert [job["position"] for job in body["jobs"]] == [1, 2, 3]


async def test_a_group_that_does_not_fit_creates_no_job(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    redis: aioredis.Redis,
) -> None:
    stack = make_stack(make_settings(), worker=False)  # per-user cap 5: the jobs stay queued
    alice = tokens["alice"]
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for i in range(3):
            queued = await http.post(
                "/v1/jobs", headers=auth(alice), json=sprite_request(f"a waiting wasp {i}")
            )
            assert queued.status_code == 202
        before = await redis.zcard(keys.user_jobs("alice"))
        refused = await http.post(
            "/v1/jobs", headers=auth(alice), json=sprite_request("a greedy gnat", variants=4)
        )
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "user_limit"
        assert "retry-after" in refused.headers
        assert await redis.zcard(keys.user_inflight("alice")) == 3
        assert await redis.zcard(keys.user_jobs("alice")) == before
        assert await redis.zcard(stack.settings.queue_name) == 3
        fits = await http.post(
            "/v1/jobs", headers=auth(alice), json=sprite_request("a modest gnat", variants=2)
        )
        assert fits.status_code == 202
        assert await redis.zcard(keys.user_inflight("alice")) == 5


async def test_variants_are_bounded(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    for fields in ({"variants": 5}, {"variants": 0}, {"variants": 4, "seed": 2**32 - 2}):
        response = await client.post(
            "/v1/jobs",
            headers=auth(tokens["alice"]),
            json=sprite_request("a bounded bug", **fields),
        )
        assert response.status_code == 422, (fields, response.text)
