"""``GET /v1/jobs/{id}/events`` over real HTTP: order, resume, final, failure, ping, cleanup."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from arq.constants import in_progress_key_prefix
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from backend.api.app import create_app
from backend.config import Settings
from backend.progress.feed import ProgressFeed
from backend.progress.slots import streams_key
from fixtures.factories import auth, sprite_request, wait_for_status
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import WorkerThread

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


class Stream:
    """An open SSE response and the one parser reading it."""

    def __init__(self, response: httpx.Response, reader: AsyncIterator[Block]) -> None:
        self.response = response
        self.reader = reader
        self.seen: list[Block] = []  # every block, pings and the retry hint included

    async def events(self, limit: int | None = None) -> list[Block]:
        """The next events (blocks with data): ``limit`` of them, or all until the server closes."""
        found: list[Block] = []
        while limit is None or len(found) < limit:
            block = await anext(self.reader, None)
            if block is None:
                break
            self.seen.append(block)
            if block.data is not None:
                found.append(block)
        return found


@asynccontextmanager
async def sse(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> AsyncIterator[Stream]:
    """Open a stream; leaving the block drops the connection (as a closed browser tab does)."""
    async with (
        http.stream("GET", url, headers=headers) as response,
        aclosing(blocks(response)) as reader,
    ):
        yield Stream(response, reader)


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


async def arq_idle(redis: aioredis.Redis, timeout_s: float = 5.0) -> None:
    """Wait until arq has finished its own bookkeeping for every job.

    SSE reports the final state the moment the store's script runs, a little before arq
    records the result; a worker stopped in between has arq cancel that write and raise
    CancelledError out of its thread. Polling clients never see this: they are slower.
    """
    deadline = time.monotonic() + timeout_s
    pattern = in_progress_key_prefix + "*"
    while [key async for key in redis.scan_iter(match=pattern, count=100)]:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the key goes in arq's last pipeline; its task returns just after


@pytest.fixture
async def make_sse_stack(redis: aioredis.Redis) -> AsyncIterator[Callable[..., SSEStack]]:
    stacks: list[SSEStack] = []

    def make(settings: Settings, *, worker: bool = True) -> SSEStack:
        stacks.append(SSEStack(settings, worker=worker))
        return stacks[-1]

    yield make
    if any(stack.worker is not None for stack in stacks):
        await arq_idle(redis)
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


async def open_slots(redis: aioredis.Redis, user: str) -> int:
    return int(await redis.zcard(streams_key(user)))


def sse_gauge() -> float:
    return REGISTRY.get_sample_value("spritequeue_sse_connections") or 0.0


async def eventually(check: Callable[[], Any], want: Any = True, timeout_s: float = 3.0) -> None:
    """Wait until ``check()`` (a value or an awaitable) equals ``want``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result == want:
            return
        assert time.monotonic() < deadline, f"still {result!r}, wanted {want!r}"
        await asyncio.sleep(0.02)


async def test_full_sequence_in_order_ends_with_completed(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings)
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], f"a knight {SLOW}")
        async with sse(http, f"/v1/jobs/{job_id}/events", auth(tokens["alice"])) as stream:
            assert stream.response.status_code == 200
            assert stream.response.headers["content-type"].startswith("text/event-stream")
            events = await stream.events()
            assert stream.seen[0].retry == 2000 and stream.seen[0].data is None
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


async def test_a_waiting_jobs_stream_shows_it_moving_up_the_queue(
    make_sse_stack: Callable[..., SSEStack],
    make_settings: Callable[..., Settings],
    tokens: dict[str, str],
) -> None:
    stack = make_sse_stack(make_settings(worker={"max_jobs": 1}))
    async with http_client(stack) as http:
        for name in ("a paladin", "a cleric"):
            await submit(http, tokens["bob"], f"{name} {SLOW}")
        job_id = await submit(http, tokens["alice"], f"a monk {SLOW}")
        async with sse(http, f"/v1/jobs/{job_id}/events", auth(tokens["alice"])) as stream:
            events = await stream.events()

    waiting = [e.view for e in events if e.view["status"] == "queued"]
    places = [view["position"] for view in waiting]
    # Two jobs ahead on one slot: the monk moves up as each of them starts, without a poll.
    assert places == sorted(places, reverse=True) and places[0] >= 2 and places[-1] == 1, places
    assert all(view["estimated_wait_s"] is not None for view in waiting)
    assert all(e.view["position"] is None for e in events if e.view["status"] != "queued")
    assert events[-1].event == "completed"


async def test_polling_and_sse_agree_on_a_waiting_jobs_place(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings, worker=False)
    headers = auth(tokens["alice"])
    async with http_client(stack) as http:
        first, _, third = [await submit(http, tokens["alice"], f"a bard {n}") for n in range(3)]
        async with sse(http, f"/v1/jobs/{third}/events", headers) as stream:
            [admitted] = await stream.events(limit=1)
            polled = await http.get(f"/v1/jobs/{third}", headers=headers)
            assert admitted.view["position"] == 3 and polled.json() == admitted.view

            assert (await http.delete(f"/v1/jobs/{first}", headers=headers)).status_code == 202
            [moved] = await stream.events(limit=1)
            polled_after = await http.get(f"/v1/jobs/{third}", headers=headers)
    assert moved.event == "progress" and moved.view["position"] == 2
    assert polled_after.json() == moved.view
    assert polled_after.headers["etag"] != polled.headers["etag"]


async def test_resume_with_last_event_id_yields_only_later_events(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings)
    headers = auth(tokens["alice"])
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], f"a rogue {SLOW}")
        url = f"/v1/jobs/{job_id}/events"
        async with sse(http, url, headers) as stream:
            head = await stream.events(limit=2)  # then drop the connection mid-job
        async with sse(http, url, {**headers, "Last-Event-ID": str(head[-1].id)}) as stream:
            rest = await stream.events()
        async with sse(http, url, headers) as stream:
            everything = await stream.events()
        async with sse(http, f"{url}?last_event_id={head[0].id}", headers) as stream:
            after_first = await stream.events()

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
        url = f"/v1/jobs/{job_id}/events"
        await wait_for_status(http, job_id, tokens["alice"], {"completed"})
        began = time.monotonic()
        async with sse(http, url, headers) as stream:
            events = await stream.events()
        assert time.monotonic() - began < 1.0
        assert events[-1].event == "completed" and events[-1].view["progress"] == 100

        # Resuming after the final event: nothing more, and 204 stops EventSource retrying.
        again = await http.get(url, headers={**headers, "Last-Event-ID": str(events[-1].id)})
        assert again.status_code == 204

        # The stream expired but the record is kept: the final event is rebuilt from it.
        await redis.delete(f"sq:events:{job_id}")
        async with sse(http, url, headers) as stream:
            rebuilt = await stream.events()
        assert [e.event for e in rebuilt] == ["completed"]
        assert rebuilt[0].view == events[-1].view


async def test_failed_job_stream_ends_with_failed(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings)
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a broken golem [mock:failure]")
        async with sse(http, f"/v1/jobs/{job_id}/events", auth(tokens["alice"])) as stream:
            events = await stream.events()
    assert events[-1].event == "failed"
    assert events[-1].view["status"] == "failed"
    assert events[-1].view["error"]["type"] == "invalid_request"
    assert all(e.event == "progress" for e in events[:-1])


async def test_cancelled_job_stream_ends_with_cancelled(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings, worker=False)
    headers = auth(tokens["alice"])
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a cancelled bard")
        async with sse(http, f"/v1/jobs/{job_id}/events", headers) as stream:
            [queued] = await stream.events(limit=1)
            assert queued.event == "progress" and queued.view["status"] == "queued"
            cancelled = await http.delete(f"/v1/jobs/{job_id}", headers=headers)
            assert cancelled.status_code == 202
            rest = await stream.events()
    assert [e.event for e in rest] == ["cancelled"]
    assert rest[0].view["status"] == "cancelled"


async def test_keep_alive_ping_with_a_short_interval(
    make_sse_stack: Callable[..., SSEStack],
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    stack = make_sse_stack(make_settings(sse={"ping_s": 0.2}), worker=False)
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a waiting archer")
        async with sse(http, f"/v1/jobs/{job_id}/events", auth(tokens["alice"])) as stream:
            await stream.events(limit=1)
            began, pings = time.monotonic(), 0
            while pings < 2:
                block = await anext(stream.reader)
                assert block.data is None  # nothing happens to a queued job: only pings
                pings += block.comments.count("ping")
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
        async with sse(http, f"/v1/jobs/{job_id}/events", auth(tokens["alice"])) as stream:
            await stream.events(limit=1)
            assert hub.listener_count == 1 and sse_gauge() == before + 1
            assert await open_slots(redis, "alice") == 1
        # Leaving the block closes the connection; the server must notice on its own.
        await eventually(lambda: (hub.listener_count, sse_gauge()), want=(0, before))
        await eventually(lambda: open_slots(redis, "alice"), want=0)
        assert stack.feed.slots.held == 0
        # HEAD answers with headers only and must not hold anything either.
        head = await http.head(f"/v1/jobs/{job_id}/events", headers=auth(tokens["alice"]))
        assert head.status_code == 200 and head.content == b""
        assert hub.listener_count == 0 and sse_gauge() == before
        assert await open_slots(redis, "alice") == 0 and stack.feed.slots.held == 0


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
        async with sse(http, url, alice) as one:
            await one.events(limit=1)
            async with sse(http, url, alice) as two:
                await two.events(limit=1)
                third = await http.get(url, headers=alice)
                assert third.status_code == 429
                assert third.json()["error"]["code"] == "too_many_streams"
                assert int(third.headers["retry-after"]) >= 1
                polled = await http.get(f"/v1/jobs/{job_id}", headers=alice)
                assert polled.status_code == 200  # polling is not capped
                bobs = await submit(http, tokens["bob"], "bob's own sprite")
                async with sse(http, f"/v1/jobs/{bobs}/events", bob) as other_user:
                    assert other_user.response.status_code == 200
            await eventually(lambda: open_slots(redis, "alice"), want=1)
            async with sse(http, url, alice) as again:
                assert again.response.status_code == 200
                assert await again.events(limit=1)


async def test_auth_ownership_and_bad_resume_point(
    make_sse_stack: Callable[..., SSEStack], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_sse_stack(settings, worker=False)
    alice = auth(tokens["alice"])
    async with http_client(stack) as http:
        job_id = await submit(http, tokens["alice"], "a private ranger")
        url = f"/v1/jobs/{job_id}/events"
        assert (await http.get(url)).status_code == 401
        assert (await http.get(url, headers=auth(tokens["bob"]))).status_code == 404
        assert (await http.get("/v1/jobs/nope/events", headers=alice)).status_code == 404
        bad = await http.get(url, headers={**alice, "Last-Event-ID": "x-1"})
        assert bad.status_code == 422
        assert bad.json()["error"]["details"][0]["field"] == "Last-Event-ID"
        async with sse(http, url, auth(tokens["admin"])) as stream:
            assert stream.response.status_code == 200  # admins see every job
            assert await stream.events(limit=1)
