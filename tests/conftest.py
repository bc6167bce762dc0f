"""Shared fixtures: a real Valkey started by the suite, the mock PixelLab, a running stack."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from backend.config import Settings
from backend.embedded_redis import EmbeddedRedis
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import MOCK_API_KEY, WorkerThread, stop_process, test_settings
from mocks.pixellab import create_mock_app


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("valkey")), appendonly=False)
    with server:
        yield server


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """A client on a freshly flushed database."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


# ---- a running stack: mock PixelLab, API over real HTTP, worker ------------------------------


@pytest.fixture(scope="session")
def mock_pixellab() -> Iterator[ThreadedUvicorn]:
    with ThreadedUvicorn(create_mock_app(api_key=MOCK_API_KEY)) as server:
        yield server


@pytest.fixture
def make_settings(
    redis_server: EmbeddedRedis, mock_pixellab: ThreadedUvicorn
) -> Callable[..., Settings]:
    httpx.post(mock_pixellab.url + "/_mock/reset")

    def make(**overrides: Any) -> Settings:
        redis_url = str(overrides.pop("redis_url", redis_server.url))
        # Places refreshed five times a second, so tests see a move without waiting long.
        overrides["jobs"] = {"position_interval_s": 0.2, **overrides.get("jobs", {})}
        return test_settings(redis_url, mock_pixellab.url, **overrides)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis: aioredis.Redis) -> Settings:
    return make_settings()


class Stack:
    """An API on a real port plus, optionally, a worker thread, on one Settings."""

    def __init__(self, settings: Settings) -> None:
        from backend.api.app import create_app

        self.settings = settings
        self.api = ThreadedUvicorn(create_app(settings))
        self.worker: WorkerThread | None = None

    def start(self, *, worker: bool = True) -> Stack:
        self.api.start()
        if worker:
            self.start_worker()
        return self

    def start_worker(self) -> None:
        self.worker = WorkerThread(self.settings).start()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def stop(self) -> None:
        self.stop_worker()
        self.api.stop()

    @property
    def url(self) -> str:
        return self.api.url


@pytest.fixture
def make_stack(redis: aioredis.Redis) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(settings: Settings, *, worker: bool = True) -> Stack:
        stack = Stack(settings).start(worker=worker)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture
def stack(make_stack: Callable[..., Stack], settings: Settings) -> Stack:
    return make_stack(settings)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes (``start_api``, ``start_worker``), stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop_process(process, timeout_s=5)


@pytest.fixture
async def tokens(redis: aioredis.Redis) -> dict[str, str]:
    from backend.store.tokens import TokenStore

    store = TokenStore(redis)
    return {
        "alice": await store.create("alice"),
        "bob": await store.create("bob"),
        "admin": await store.create("root", admin=True),
    }


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        yield http
