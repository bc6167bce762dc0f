"""Webhooks over the real stack: a receiver on loopback (allowed by the setting) gets one
signed delivery per final state, retried until it answers 2xx; unsafe callbacks are a 422
at submission and refused again at delivery."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.config import Settings
from backend.webhooks.signing import verify
from fixtures.factories import auth, cache_sprite, sprite_request, wait_for_status, wait_until
from fixtures.servers import ThreadedUvicorn
from tests.conftest import Stack

SECRET = "whsec-test-0123456789abcdef"


@dataclass
class Receiver:
    """Records every delivery; answers 500 to the first ``fail_first`` of each job."""

    fail_first: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        job_id = json.loads(body)["job_id"]
        tries = sum(1 for s in self.seen if s["job_id"] == job_id)
        status = 500 if tries < self.fail_first else 204
        self.seen.append(
            {
                "job_id": job_id,
                "body": body,
                "status": status,
                "signature": request.headers.get("x-spritequeue-signature", ""),
                "delivery": request.headers.get("x-spritequeue-delivery", ""),
            }
        )
        return Response(status_code=status)

    def of(self, job_id: str) -> list[dict[str, Any]]:
        return [s for s in self.seen if s["job_id"] == job_id]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver(fail_first=1)
    with ThreadedUvicorn(Starlette(routes=[Route("/hook", state.hook, methods=["POST"])])) as srv:
        yield state, srv.url + "/hook"


def hook_settings(make_settings: Callable[..., Settings], **webhooks: Any) -> Settings:
    return make_settings(
        webhooks={
            "secret": SECRET,
            "allow_http_hosts": "127.0.0.1",
            "backoff_base_s": 0.2,
            **webhooks,
        }
    )


async def test_one_signed_delivery_per_final_state_retried_until_2xx(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    stack = make_stack(hook_settings(make_settings))
    alice = tokens["alice"]
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        done = await http.post(
            "/v1/jobs", headers=auth(alice), json=sprite_request("a hooked heron", callback_url=url)
        )
        slow = await http.post(
            "/v1/jobs",
            headers=auth(alice),
            json=sprite_request("a cancelled crane [mock-latency:3000]", callback_url=url),
        )
        assert done.status_code == slow.status_code == 202, done.text
        done_id, slow_id = done.json()["job_id"], slow.json()["job_id"]
        await wait_for_status(http, slow_id, alice, {"active"})
        assert (await http.delete(f"/v1/jobs/{slow_id}", headers=auth(alice))).status_code == 202

        async def both_delivered() -> bool:
            views = [
                (await http.get(f"/v1/jobs/{j}", headers=auth(alice))).json()
                for j in (done_id, slow_id)
            ]
            return all((v.get("webhook") or {}).get("state") == "delivered" for v in views)

        await wait_until(both_delivered, 15, "both webhooks delivered")
        await asyncio.sleep(0.6)  # nothing more arrives once a 2xx was answered
        for job_id, final in ((done_id, "completed"), (slow_id, "cancelled")):
            deliveries = state.of(job_id)
            assert [d["status"] for d in deliveries] == [500, 204]  # retried until 2xx
            assert len({d["delivery"] for d in deliveries}) == 1  # one delivery id to dedup
            for delivery in deliveries:
                assert verify(SECRET.encode(), delivery["body"], delivery["signature"])
                assert not verify(b"another secret", delivery["body"], delivery["signature"])
                assert json.loads(delivery["body"])["status"] == final
            view = (await http.get(f"/v1/jobs/{job_id}", headers=auth(alice))).json()
            assert view["webhook"] == {"state": "delivered", "attempts": 2, "last_status": 204}


async def test_a_cache_hit_with_a_callback_is_delivered_at_once(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis: aioredis.Redis,
    tokens: dict[str, str],
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    stack = make_stack(hook_settings(make_settings), worker=False)  # the deliverer: a worker's
    body = sprite_request("a heron already drawn", callback_url=url)
    await cache_sprite(redis, body)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        hit = await http.post("/v1/jobs", headers=auth(tokens["alice"]), json=body)
        assert hit.status_code == 200 and hit.json()["cached"] is True, hit.text
        job_id = hit.json()["job_id"]
        assert hit.json()["webhook"]["state"] == "pending"
        stack.start_worker()

        async def delivered() -> bool:
            view = (await http.get(f"/v1/jobs/{job_id}", headers=auth(tokens["alice"]))).json()
            return (view.get("webhook") or {}).get("state") == "delivered"

        await wait_until(delivered, 15, "the cache hit's webhook delivered")
    assert [d["status"] for d in state.of(job_id)] == [500, 204]
    assert json.loads(state.of(job_id)[-1]["body"])["status"] == "completed"


@pytest.mark.parametrize(
    "callback",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://127.0.0.1/",
        "https://[::1]/",
        "ftp://example.com/",
        "not a url",
    ],
)
async def test_unsafe_callbacks_are_refused_at_submission(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    callback: str,
) -> None:
    stack = make_stack(make_settings(webhooks={"secret": SECRET}), worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        response = await http.post(
            "/v1/jobs",
            headers=auth(tokens["alice"]),
            json=sprite_request("a wary wren", callback_url=callback),
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "callback_url"


async def test_without_a_secret_a_callback_is_a_422(
    stack: Stack, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/jobs",
        headers=auth(tokens["alice"]),
        json=sprite_request("an unsigned urchin", callback_url="https://example.com/hook"),
    )
    assert response.status_code == 422
    assert "SPRITEQ_WEBHOOKS__SECRET" in response.json()["error"]["message"]


async def test_the_address_is_checked_again_at_delivery(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    receiver: tuple[Receiver, str],
) -> None:
    """The API allowed the loopback receiver, the worker's settings no longer do (as a name
    that resolved to a public address at submission and to an internal one later would):
    no request reaches it, and the delivery fails."""
    state, url = receiver
    stack = make_stack(hook_settings(make_settings), worker=False)
    stack.worker = None
    from fixtures.stack import WorkerThread

    worker = WorkerThread(make_settings(webhooks={"secret": SECRET})).start()
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
            alice = tokens["alice"]
            job = await http.post(
                "/v1/jobs",
                headers=auth(alice),
                json=sprite_request("a rebound robin", callback_url=url),
            )
            assert job.status_code == 202, job.text
            job_id = job.json()["job_id"]

            async def failed() -> bool:
                view = (await http.get(f"/v1/jobs/{job_id}", headers=auth(alice))).json()
                return (view.get("webhook") or {}).get("state") == "failed"

            await wait_until(failed, 15, "the delivery refused")
    finally:
        worker.stop()
    assert state.seen == []
