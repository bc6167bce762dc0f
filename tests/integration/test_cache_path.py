"""The cache on the job path: hits without workers, single flight, and cache outages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backend.config import Settings
from backend.embedded_redis import free_port
from fixtures.factories import auth, sprite_request, wait_for_status
from fixtures.servers import ThreadedUvicorn

FINAL = {"completed", "failed", "cancelled"}


async def mock_generations(mock: ThreadedUvicorn) -> int:
    async with httpx.AsyncClient() as http:
        return int((await http.get(mock.url + "/_mock/stats")).json()["generations"])


async def test_cache_hit_answers_without_a_worker(
    make_settings: Callable[..., Settings], make_stack: Any, tokens: dict[str, str]
) -> None:
    settings = make_settings()
    stack = make_stack(settings)
    body = sprite_request("a tiny cactus")
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        first = (await http.post("/v1/jobs", json=body, headers=auth(tokens["alice"]))).json()
        await wait_for_status(http, first["job_id"], tokens["alice"], {"completed"})
        stack.stop_worker()
        hit = await http.post("/v1/jobs", json=body, headers=auth(tokens["bob"]))
        assert hit.status_code == 200 and hit.json()["cached"] is True
        image = await http.get(hit.json()["result"]["url"], headers=auth(tokens["bob"]))
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"


async def test_two_users_same_request_share_one_pixellab_call(
    client: httpx.AsyncClient, tokens: dict[str, str], mock_pixellab: ThreadedUvicorn
) -> None:
    body = sprite_request("a shared dragon [mock-latency:700]")
    before = await mock_generations(mock_pixellab)
    responses = await asyncio.gather(
        client.post("/v1/jobs", json=body, headers=auth(tokens["alice"])),
        client.post("/v1/jobs", json=body, headers=auth(tokens["bob"])),
    )
    ids = [r.json()["job_id"] for r in responses]
    assert all(r.status_code == 202 for r in responses) and ids[0] != ids[1]
    done = [
        await wait_for_status(client, job_id, token, FINAL)
        for job_id, token in zip(ids, (tokens["alice"], tokens["bob"]), strict=True)
    ]
    assert [d["status"] for d in done] == ["completed", "completed"]
    assert done[0]["result"]["sha256"] == done[1]["result"]["sha256"]
    assert await mock_generations(mock_pixellab) - before == 1


async def test_l1_down_submissions_and_jobs_still_work(
    make_settings: Callable[..., Settings], make_stack: Any, tokens: dict[str, str]
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack = make_stack(make_settings(cache_redis_url=dead))
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        response = await http.post(
            "/v1/jobs", json=sprite_request("a lonely tree"), headers=auth(tokens["alice"])
        )
        assert response.status_code == 202
        done = await wait_for_status(http, response.json()["job_id"], tokens["alice"], FINAL)
        assert done["status"] == "completed"


async def test_firestore_down_jobs_still_complete(
    make_settings: Callable[..., Settings],
    make_stack: Any,
    tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # unreachable
    stack = make_stack(
        make_settings(firestore={"project": "spritequeue-down"}, cache={"timeout_s": 0.3})
    )
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        response = await http.post(
            "/v1/jobs", json=sprite_request("a stone golem"), headers=auth(tokens["alice"])
        )
        assert response.status_code == 202
        done = await wait_for_status(http, response.json()["job_id"], tokens["alice"], FINAL)
        assert done["status"] == "completed"
        ready = (await http.get("/health/ready", headers=auth(tokens["admin"]))).json()
        assert ready["checks"]["cache"]["l2_enabled"] is True
