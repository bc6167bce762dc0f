"""Redis clients from a URL: plain ``redis://``/``rediss://``, or Sentinel's ``redis+sentinel://``.

``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]`` names the
Sentinels and the monitored service; every client built here (our asyncio clients, arq's
``RedisSettings``, the metrics collector's synchronous client) asks the Sentinels for the
primary on each new connection, so it follows the primary through a failover. The password
is the data nodes'; the Sentinels are reached without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
from arq.connections import RedisSettings as ArqRedisSettings
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import Sentinel, SentinelConnectionPool

from backend.errors import ConfigurationError

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel(url: str) -> bool:
    return url.lower().startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelURL:
    """Raises ``ConfigurationError`` for a malformed URL (never showing its password)."""
    if not is_sentinel(url):
        raise ConfigurationError(f"not a {SENTINEL_SCHEME}:// URL")
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    sentinels: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"{SENTINEL_SCHEME}:// URL: expected host:port[,host:port...], got {part!r}"
            )
        sentinels.append((host.strip("[]"), int(port)))
    segments = [segment for segment in path.split("?")[0].split("/") if segment]
    if not segments or len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ConfigurationError(f"{SENTINEL_SCHEME}:// URL: expected /SERVICE_NAME[/DB]")
    db = int(segments[1]) if len(segments) == 2 else 0
    return SentinelURL(tuple(sentinels), unquote(segments[0]), db, username, password)


def _node_kwargs(parsed: SentinelURL) -> dict[str, Any]:
    return {"db": parsed.db, "username": parsed.username, "password": parsed.password}


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client with the connection options ``kwargs``; Sentinel-aware."""
    if not is_sentinel(url):
        client: aioredis.Redis = aioredis.Redis.from_url(url, **kwargs)
        return client
    parsed = parse_sentinel_url(url)
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    manager = AsyncSentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs
    )
    master: aioredis.Redis = manager.master_for(parsed.service, **_node_kwargs(parsed), **kwargs)
    return master


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A synchronous client with the connection options ``kwargs``; Sentinel-aware."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **kwargs)
    parsed = parse_sentinel_url(url)
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    manager = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs
    )
    master: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]  # as above
        parsed.service, **_node_kwargs(parsed), **kwargs
    )
    return master


async def aclose_client(client: aioredis.Redis) -> None:
    """Close ``client`` and, for a Sentinel client, its connections to the Sentinels."""
    pool = client.connection_pool
    await client.aclose()
    if isinstance(pool, AsyncSentinelPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


def close_sync_client(client: redis.Redis) -> None:
    pool = client.connection_pool
    client.close()
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()


def arq_settings(url: str) -> ArqRedisSettings:
    """arq's ``RedisSettings`` for ``url`` (``sentinel=True`` for a Sentinel URL)."""
    if not is_sentinel(url):
        return ArqRedisSettings.from_dsn(url)
    parsed = parse_sentinel_url(url)
    return ArqRedisSettings(
        host=list(parsed.sentinels),
        sentinel=True,
        sentinel_master=parsed.service,
        database=parsed.db,
        username=parsed.username,
        password=parsed.password,
    )
