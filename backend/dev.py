"""``spritequeue dev``: embedded Valkeys, the mock PixelLab, the API and a worker, together.

Each piece runs as its own process (as in production); all of them die with this one. The
queue's Valkey (AOF, ``noeviction``) and the L1 cache's Valkey (``maxmemory``,
``allkeys-lru``) are apart, so a day of cached sprites can never fill the queue's memory and
stop admission. Both require a random password, written only to ``dev.json`` (mode 0600) and
handed to the children in their environment, so another local user cannot reach the data or
mint an admin token.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend.embedded_redis import EmbeddedRedis, free_port
from backend.processes import spawn_cli, stop_process, wait_http
from backend.store.tokens import TokenStore


async def _create_tokens(redis_url: str) -> tuple[str, str]:
    from backend.queue.resources import redis_client

    redis = redis_client(redis_url)
    try:
        tokens = TokenStore(redis)
        # "admin" is reserved for SPRITEQ_ADMIN_TOKEN's bootstrap admin
        return await tokens.create("artist"), await tokens.create("dev-admin", admin=True)
    finally:
        await redis.aclose()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (mode 0600, even if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _embedded_servers(
    env: dict[str, str], data_dir: Path, cache_maxmemory: str
) -> list[EmbeddedRedis]:
    """Start the queue and cache Valkeys the environment does not name; sets their URLs."""
    servers: list[EmbeddedRedis] = []
    try:
        if not env.get("SPRITEQ_REDIS_URL"):
            queue = EmbeddedRedis(data_dir / "redis", password=secrets.token_hex(24))
            servers.append(queue.start())
            env["SPRITEQ_REDIS_URL"] = queue.url
        if not env.get("SPRITEQ_CACHE_REDIS_URL"):
            cache = EmbeddedRedis(
                data_dir / "cache",
                appendonly=False,
                password=secrets.token_hex(24),
                maxmemory=cache_maxmemory,
                policy="allkeys-lru",
            )
            servers.append(cache.start())
            env["SPRITEQ_CACHE_REDIS_URL"] = cache.url
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def run_dev(*, port: int, data_dir: Path, cache_maxmemory: str = "256mb") -> int:
    env = dict(os.environ)
    children: list[subprocess.Popen[bytes]] = []
    if not data_dir.exists():  # a folder the user named may be shared: leave its mode alone
        data_dir.mkdir(parents=True, mode=0o700)
    servers = _embedded_servers(env, data_dir, cache_maxmemory)
    try:
        if not env.get("SPRITEQ_PIXELLAB__API_KEY"):
            mock_port, mock_key = free_port(), "mock-" + secrets.token_hex(8)
            # By environment, not argv: a command line is visible to every local user.
            mock_env = {**env, "SPRITEQ_MOCK_API_KEY": mock_key}
            children.append(spawn_cli(["mock-pixellab", "--port", str(mock_port)], mock_env))
            env["SPRITEQ_PIXELLAB__BASE_URL"] = f"http://127.0.0.1:{mock_port}"
            env["SPRITEQ_PIXELLAB__API_KEY"] = mock_key
            wait_http(f"http://127.0.0.1:{mock_port}/_mock/stats")
        children.append(spawn_cli(["api", "--port", str(port)], env))
        children.append(spawn_cli(["worker", "--metrics-port", str(free_port())], env))
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health/live")
        user_token, admin_token = asyncio.run(_create_tokens(env["SPRITEQ_REDIS_URL"]))
        # For scripts (load/make_tokens.py): where this dev stack is, with the Valkey
        # passwords in the URLs, so readable by this user only. Tokens stay out of it.
        info = {
            "url": url,
            "redis_url": env["SPRITEQ_REDIS_URL"],
            "cache_redis_url": env["SPRITEQ_CACHE_REDIS_URL"],
            "pid": os.getpid(),
        }
        write_private(data_dir / "dev.json", json.dumps(info))
        print(f"spritequeue is running at {url}", flush=True)
        print(f"user token (artist):  {user_token}", flush=True)
        print(f"admin token (dev-admin):  {admin_token}", flush=True)
        print("press Ctrl+C to stop", flush=True)
        stop = _wait_for_signal_or_exit(children)
        return 0 if stop else 1
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            stop_process(child)
        for server in servers:
            server.stop()


def _wait_for_signal_or_exit(children: list[subprocess.Popen[bytes]]) -> bool:
    """True when stopped by a signal, False when a child died on its own."""
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping:
        if any(child.poll() is not None for child in children):
            print("a spritequeue process exited; stopping", file=sys.stderr, flush=True)
            return False
        time.sleep(0.2)
    return True
