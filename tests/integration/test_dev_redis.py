"""The dev stack's Valkeys: a password nobody else can read, and a cache apart from the queue.

Also the start-up check that refuses a queue Redis whose policy may evict keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError

from backend.config import Settings
from backend.embedded_redis import EmbeddedRedis, free_port
from backend.queue.resources import open_resources
from backend.store.eviction import EvictionPolicyError, check_eviction_policy

PASSWORD = "pw-" + "0123456789abcdef" * 2


async def _refused_without_password(url: str) -> None:
    bare = url.split("@", 1)[1]
    client = aioredis.Redis.from_url("redis://" + bare)
    try:
        with pytest.raises(AuthenticationError):
            await client.ping()
    finally:
        await client.aclose()


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.fixture
def lru_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(
        tmp_path / "lru", appendonly=False, maxmemory="16mb", policy="allkeys-lru"
    ) as server:
        yield server


async def test_a_password_is_required_and_never_on_the_command_line(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "valkey", appendonly=False, password=PASSWORD) as server:
        assert PASSWORD in server.url and PASSWORD not in repr(server)
        await _refused_without_password(server.url)
        client = aioredis.Redis.from_url(server.url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
        process = server._process
        assert process is not None
        assert PASSWORD.encode() not in _cmdline(process.pid)


async def test_a_cache_server_evicts_least_recently_used(lru_server: EmbeddedRedis) -> None:
    client = aioredis.Redis.from_url(lru_server.url)
    try:
        config = await client.config_get("maxmemory*")
    finally:
        await client.aclose()
    assert config["maxmemory-policy"] == "allkeys-lru"
    assert int(config["maxmemory"]) == 16 * 1024 * 1024


async def test_a_queue_redis_that_may_evict_is_refused(lru_server: EmbeddedRedis) -> None:
    with pytest.raises(EvictionPolicyError, match="noeviction"):
        await open_resources(Settings(redis_url=lru_server.url))
    allowed = Settings(redis_url=lru_server.url, redis={"allow_eviction": True})
    resources = await open_resources(allowed)
    await resources.close()


async def test_the_queue_redis_with_noeviction_is_accepted(redis_server: EmbeddedRedis) -> None:
    resources = await open_resources(Settings(redis_url=redis_server.url))
    await resources.close()


def test_the_cli_refuses_with_one_clear_line(lru_server: EmbeddedRedis) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPRITEQ_")}
    env["SPRITEQ_REDIS_URL"] = lru_server.url
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "token", "create", "--user", "x"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert "maxmemory-policy 'allkeys-lru'" in done.stderr
    assert "SPRITEQ_REDIS__ALLOW_EVICTION" in done.stderr
    assert "Traceback" not in done.stderr


class _NoConfig:
    """A managed Redis that forbids CONFIG."""

    async def config_get(self, pattern: str) -> dict[str, str]:
        raise ResponseError("unknown command 'CONFIG', with args beginning with: 'GET'")


async def test_a_redis_that_forbids_config_is_not_checked() -> None:
    await check_eviction_policy(_NoConfig(), allow_eviction=False)  # type: ignore[arg-type]


async def _check_dev_servers(queue_url: str, cache_url: str) -> None:
    for url in (queue_url, cache_url):
        await _refused_without_password(url)
    cache = aioredis.Redis.from_url(cache_url)
    queue = aioredis.Redis.from_url(queue_url)
    try:
        assert (await cache.config_get("maxmemory-policy"))["maxmemory-policy"] == "allkeys-lru"
        assert int((await cache.config_get("maxmemory"))["maxmemory"]) == 32 * 1024 * 1024
        assert (await queue.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"
    finally:
        await cache.aclose()
        await queue.aclose()


@pytest.mark.slow
def test_dev_keeps_its_passwords_in_a_private_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPRITEQ_")}
    data_dir, out = tmp_path / "data", tmp_path / "out.txt"
    with out.open("wb") as sink:
        dev = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "dev", "--port", str(free_port()),
             "--data-dir", str(data_dir), "--cache-maxmemory", "32mb"],
            env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 45
        while "press Ctrl+C" not in out.read_text() and time.monotonic() < deadline:
            assert dev.poll() is None, out.read_text()
            time.sleep(0.1)
        assert "press Ctrl+C" in out.read_text()
        info_path = data_dir / "dev.json"
        assert stat.S_IMODE(info_path.stat().st_mode) == 0o600
        for folder in (data_dir, data_dir / "redis", data_dir / "cache"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        info = json.loads(info_path.read_text())
        queue_url, cache_url = info["redis_url"], info["cache_redis_url"]
        assert queue_url != cache_url
        asyncio.run(_check_dev_servers(queue_url, cache_url))
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(30)
    printed = out.read_text()
    for url in (queue_url, cache_url):
        password = url.split("@", 1)[0].rsplit(":", 1)[1]
        assert password not in printed
        for log in data_dir.rglob("*.log"):
            assert password not in log.read_text(errors="replace")
