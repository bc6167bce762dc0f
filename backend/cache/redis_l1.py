"""L1: one Redis hash per entry at ``keys.cache(key)``, PNG bytes raw, metadata as plain fields."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from backend.cache.base import CachedImage, CacheError
from backend.store import keys

# A hash that lost its entry between the read and the counter update of a hit (see ``get``)
# holds only counters; it needs no more than a short life before it disappears on its own.
_ORPHAN_TTL_S = 60

_PNG = b"png"


class RedisL1:
    """The Redis layer. The client must use ``decode_responses=False``: the PNG is raw bytes."""

    name = "l1"

    def __init__(self, redis: aioredis.Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def get(self, key: str) -> CachedImage | None:
        """The entry with its hit counted, or ``None``; raises ``CacheError``.

        A miss is a single HGETALL and writes nothing. A hit then bumps ``hit_count`` and
        ``last_accessed_at`` in one MULTI, so concurrent hits are all counted. If the entry
        expires between the two round trips, the MULTI creates a hash with only the counters:
        ``EXPIRE … NX`` gives it a short life and, having no PNG, it reads as a miss and the
        next ``put`` overwrites it. Avoiding that race would need WATCH retries or a script.
        """
        name = keys.cache(key)
        try:
            fields: dict[bytes, bytes] = await self._redis.hgetall(name)  # type: ignore[misc]
            if _PNG not in fields:
                return None
            now = time.time()
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(name, "hit_count", 1)
                pipe.hset(name, "last_accessed_at", repr(now))
                pipe.expire(name, _ORPHAN_TTL_S, nx=True)
                hit_count, _, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CacheError(f"L1 get failed: {exc}") from exc
        return replace(_decode(key, fields), hit_count=int(hit_count), last_accessed_at=now)

    async def put(self, image: CachedImage) -> None:
        """Store ``image`` for ``ttl_s`` (less if it expires sooner); raises ``CacheError``."""
        now = time.time()
        expires_at = image.expires_within(self._ttl_s, now)
        ttl_ms = int((expires_at - now) * 1000)
        if ttl_ms <= 0:
            return  # already past its expiry: storing it would only serve a stale entry
        name = keys.cache(image.key)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(name, mapping=_encode(image, expires_at))
                pipe.pexpire(name, ttl_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CacheError(f"L1 put failed: {exc}") from exc

    async def ping(self) -> None:
        """Raises ``CacheError`` when Redis does not answer."""
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise CacheError(f"L1 ping failed: {exc}") from exc


def _encode(image: CachedImage, expires_at: float) -> dict[str, bytes | str | int]:
    return {
        "png": image.png,
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
        "sha256": image.sha256,
        "size": image.size,
        "request": json.dumps(image.request, separators=(",", ":"), sort_keys=True),
        "created_at": repr(image.created_at),
        "last_accessed_at": repr(image.last_accessed_at),
        "hit_count": image.hit_count,
        "expires_at": repr(expires_at),
        "frames": image.frames,
    }


def _decode(key: str, fields: dict[bytes, bytes]) -> CachedImage:
    try:
        text = {k.decode(): v.decode() for k, v in fields.items() if k != _PNG}
        request = json.loads(text["request"])
        if not isinstance(request, dict):
            raise ValueError("request is not an object")
        return CachedImage(
            key=key,
            png=fields[_PNG],
            content_type=text["content_type"],
            width=int(text["width"]),
            height=int(text["height"]),
            sha256=text["sha256"],
            size=int(text["size"]),
            request=request,
            created_at=float(text["created_at"]),
            last_accessed_at=float(text["last_accessed_at"]),
            hit_count=int(text["hit_count"]),
            expires_at=float(text["expires_at"]),
            frames=int(text.get("frames", "1")),  # entries from before frames: one
        )
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError and JSON errors are ValueErrors
        raise CacheError(f"L1 entry {key} is malformed: {exc!r}") from exc
