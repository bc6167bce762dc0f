"""``GET /v1/jobs/{id}/events`` over real HTTP: order, resume, final, failure, ping, cleanup."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from backend.api.app import create_app
from backend.config import Settings
from backend.progress.feed import ProgressFeed
from backend.progress.slots import streams_key
from fixtures.factories import auth, sprite_request, wait_for_status
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import WorkerThread

FINAL = {"completed", "failed", "cancelled"}
SLOW = "[mock-latency:300]"  # each PixelLab stage takes long enough to be seen


@dataclass
class Block:
    """One SSE block as a client sees it (fields, or a comment line for a ping)."""

    event: str | None = None
    id: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def view(self) -> dict[str, Any]:
        assert self.data is not None
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


async def blocks(response: httpx.Response) -> AsyncIterator[Block]:
    """Parse the SSE wire format (lines, a blank line ends a block)."""
    block = Block()
    async for line in response.aiter_lines():
        if line == "":
            yield block
            block = Block()
        elif line.startswith(":"):
            block.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                block.data = value if block.data is None else block.data + "\n" + value
            elif name == "retry":
                block.retry = int(value)
            elif name in ("event", "id"):
                setattr(block, name, value)


async def events_of(response: httpx.Response, limit: int | None = None) -> list[Block]:
    """The events (blocks with data) until the server closes, or the first ``limit``."""
    found = []
    async for block in blocks(response):
        if block.data is not None:
            found.append(block)
            if limit is not None and len(found) == limit:
                break
    return found


class SSEStack:
    """An API (whose app, and so whose hub, the test can see) plus an optional worker."""

    def __init__(self, settings: Settings, *, worker: bool) -> None:
        self.app: Starlette = create_app(settings)
        self.server = ThreadedUvicorn(self.app).start()
        self.worker = WorkerThread(settings).start() if worker else None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def feed(self) -> ProgressFeed:
        feed: ProgressFeed = self.app.state.progress
        return feed

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.server.stop()


@pytest.fixture
def make_sse_stack(redis: aioredis.Redis) -> Iterator[Callable[..., SSEStack]]:
    stacks: list[SSEStack] = []

    def make(settings: Settings, *, worker: bool = True) -> SSEStack:
        stacks.append(SSEStack(settings, worker=worker))
        return stacks[-1]

    yield make
    for stack in stacks:
        stack.stop()


@asynccontextmanager
async def http_client(stack: SSEStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        yield http


async def submit(http: httpx.AsyncClient, token: str, description: str) -> str:
    response = await http.post("/v1/jobs", json=sprite_request(description), headers=auth(token))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def sse_gauge() -> float:
    return REGISTRY.get_sample_value("spritequeue_sse_connections") or 0.0


async def eventually(check: Callable[[], Any], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_full_sequence_in_order_ends_with_completed(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings)
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], f"a knight {SLOW}")
        url = f"/v1/jobs/{job_id}/events"
        async with http.stream("GET", url, headers=auth(tokens["alice"])) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = await anext(aiter(blocks(response)))
            assert first.retry == 2000
            events = await events_of(response)
        polled = (await http.get(f"/v1/jobs/{job_id}", headers=auth(tokens["alice"]))).json()

    names = [e.event for e in events]
    assert names[-1] == "completed" and set(names[:-1]) == {"progress"}, names
    progress = [e.view["progress"] for e in events]
    assert progress == sorted(progress) and {0, 5, 10, 90, 100} <= set(progress), progress
    stages = [e.view["stage"] for e in events]
    assert stages[0] == "queued" and stages[-1] == "completed"
    ids = [tuple(map(int, str(e.id).split("-"))) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Polling and SSE agree on the final state, field for field.
    assert events[-1].view == polled


async def test_resume_with_last_event_id_yields_only_later_events(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings)
    headers = auth(tokens["alice"])
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], f"a rogue {SLOW}")
        url = f"/v1/jobs/{job_id}/events"
        async with http.stream("GET", url, headers=headers) as response:
            head = await events_of(response, limit=2)  # then drop the connection mid-job
        resume = {**headers, "Last-Event-ID": str(head[-1].id)}
        async with http.stream("GET", url, headers=resume) as response:
            rest = await events_of(response)
        async with http.stream("GET", url, headers=headers) as response:
            everything = await events_of(response)
        by_query = f"{url}?last_event_id={head[0].id}"
        async with http.stream("GET", by_query, headers=headers) as response:
            after_first = await events_of(response)

    assert rest and rest[-1].event == "completed"
    assert [e.id for e in head + rest] == [e.id for e in everything]
    assert [e.id for e in after_first] == [e.id for e in everything[1:]]


async def test_finished_job_gets_its_final_event_at_once_and_closes(
    make_sse_stack: Callable[..., SSEStack],
    settings: Settings,
    tokens: dict[str, str],
    redis: aioredis.Redis,
) -> None:
    stack = make_sse_stack(settings)
    headers = auth(tokens["alice"])
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a finished wizard")
        await wait_for_status(http, job_id, tokens["alice"], {"completed"})
        began = time.monotonic()
        async with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
            events = await events_of(response)
        assert time.monotonic() - began < 1.0
        assert events[-1].event == "completed" and events[-1].view["progress"] == 100

        # Resuming after the final event: nothing more, and 204 stops EventSource retrying.
        done = {**headers, "Last-Event-ID": str(events[-1].id)}
        again = await http.get(f"/v1/jobs/{job_id}/events", headers=done)
        assert again.status_code == 204

        # The stream expired but the record is kept: the final event is rebuilt from it.
        await redis.delete(f"sq:events:{job_id}")
        async with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
            rebuilt = await events_of(response)
        assert [e.event for e in rebuilt] == ["completed"]
        assert rebuilt[0].view == events[-1].view


async def test_failed_job_stream_ends_with_failed(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings)
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a broken golem [mock:auth_error]")
        url = f"/v1/jobs/{job_id}/events"
        async with http.stream("GET", url, headers=auth(tokens["alice"])) as response:
            events = await events_of(response)
    assert events[-1].event == "failed"
    assert events[-1].view["status"] == "failed"
    assert events[-1].view["error"]["type"] == "auth"
    assert all(e.event == "progress" for e in events[:-1])


async def test_cancelled_job_stream_ends_with_cancelled(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings, worker=False)
    headers = auth(tokens["alice"])
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a cancelled bard")
        async with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
            reader = blocks(response)
            assert (await anext(reader)).retry == 2000
            queued = await anext(reader)
            assert queued.event == "progress" and queued.view["status"] == "queued"
            assert (await http.delete(f"/v1/jobs/{job_id}", headers=headers)).status_code == 202
            rest = [b async for b in reader if b.data is not None]
    assert [b.event for b in rest] == ["cancelled"]


async def test_keep_alive_ping_with_a_short_interval(
    make_sse_stack: Callable[..., SSEStack],
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    stack = make_sse_stack(make_settings(sse={"ping_s": 0.2}), worker=False)
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a waiting archer")
        url = f"/v1/jobs/{job_id}/events"
        pings = 0
        async with http.stream("GET", url, headers=auth(tokens["alice"])) as response:
            began = time.monotonic()
            async for block in blocks(response):
                pings += block.comments.count("ping")
                if pings >= 2:
                    break
            assert time.monotonic() - began < 1.5


async def test_disconnect_releases_listener_gauge_and_slot(
    make_sse_stack: Callable[..., SSEStack],
    settings: Settings,
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    stack = make_sse_stack(settings, worker=False)
    hub, before = stack.feed.hub, sse_gauge()
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "an abandoned cleric")
        url = f"/v1/jobs/{job_id}/events"
        async with http.stream("GET", url, headers=auth(tokens["alice"])) as response:
            await events_of(response, limit=1)
            assert hub.listener_count == 1 and sse_gauge() == before + 1
            assert await redis.zcard(streams_key("alice")) == 1
        # Leaving the block closes the connection; the server must notice on its own.
        await eventually(lambda: hub.listener_count == 0 and sse_gauge() == before)
        await eventually(lambda: redis.zcard(streams_key("alice")) == 0)
        assert stack.feed.slots.held == 0


async def test_per_user_stream_cap_answers_429(
    make_sse_stack: Callable[..., SSEStack],
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    stack = make_sse_stack(make_settings(limits={"max_sse_per_user": 2}), worker=False)
    alice, bob = auth(tokens["alice"]), auth(tokens["bob"])
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a popular paladin")
        url = f"/v1/jobs/{job_id}/events"
        async with http.stream("GET", url, headers=alice) as one:
            await events_of(one, limit=1)
            async with http.stream("GET", url, headers=alice) as two:
                await events_of(two, limit=1)
                third = await http.get(url, headers=alice)
                assert third.status_code == 429
                assert third.json()["error"]["code"] == "too_many_streams"
                assert int(third.headers["retry-after"]) >= 1
                other = await http.get(f"/v1/jobs/{job_id}", headers=alice)
                assert other.status_code == 200  # polling is not capped
            await eventually(lambda: redis.zcard(streams_key("alice")) == 1)
            async with http.stream("GET", url, headers=alice) as again:
                assert again.status_code == 200
        bobs = await submit(http, tokens["bob"], "bob's own sprite")
        async with http.stream("GET", f"/v1/jobs/{bobs}/events", headers=bob) as response:
            assert response.status_code == 200


async def test_auth_ownership_and_bad_resume_point(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings, worker=False)
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a private ranger")
        url = f"/v1/jobs/{job_id}/events"
        assert (await http.get(url)).status_code == 401
        assert (await http.get(url, headers=auth(tokens["bob"]))).status_code == 404
        assert (await http.get("/v1/jobs/nope/events", headers=auth(tokens["alice"]))).status_code == 404
        bad = await http.get(url, headers={**auth(tokens["alice"]), "Last-Event-ID": "x-1"})
        assert bad.status_code == 422
        assert bad.json()["error"]["details"][0]["field"] == "Last-Event-ID"
        async with http.stream("GET", url, headers=auth(tokens["admin"])) as response:
            assert response.status_code == 200  # admins see every job
