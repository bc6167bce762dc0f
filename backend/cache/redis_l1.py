"""L1: one Redis hash per entry at ``keys.cache(key)``, PNG bytes raw, metadata as plain fields."""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from backend.cache.base import CachedImage, CacheError, ImageInfo
from backend.store import keys

_PNG = b"png"

# A hit: count it and read the entry in one step (a miss writes nothing).
_HIT = """
if redis.call("HEXISTS", KEYS[1], "png") == 0 then
  return false
end
redis.call("HINCRBY", KEYS[1], "hit_count", 1)
redis.call("HSET", KEYS[1], "last_accessed_at", ARGV[1])
return redis.call("HGETALL", KEYS[1])
"""

# What a cache-hit submission answers with, read only: the PNG stays in Redis.
_INFO_FIELDS = ("width", "height", "sha256", "size", "hit_count", "content_type", "frames")
_PEEK = """
if redis.call("HEXISTS", KEYS[1], "png") == 0 then
  return false
end
return redis.call("HMGET", KEYS[1], unpack(ARGV))
"""

# Hits counted later, many in one step (``TieredCache.count_hit``): KEYS are entries,
# ARGV[i] "count last_accessed_at" for KEYS[i]. An evicted entry is not brought back as a
# hash without its image, and an older access time never replaces a newer one.
_COUNT_HITS = """
for i, key in ipairs(KEYS) do
  if redis.call("HEXISTS", key, "png") == 1 then
    local count, at = string.match(ARGV[i], "(%S+) (%S+)")
    redis.call("HINCRBY", key, "hit_count", count)
    local last = tonumber(redis.call("HGET", key, "last_accessed_at") or "0")
    if tonumber(at) > last then
      redis.call("HSET", key, "last_accessed_at", at)
    end
  end
end
return #KEYS
"""


class RedisL1:
    """The Redis layer. The client must use ``decode_responses=False``: the PNG is raw bytes."""

    name = "l1"

    def __init__(self, redis: aioredis.Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._hit_script = redis.register_script(_HIT)
        self._peek_script = redis.register_script(_PEEK)
        self._count_script = redis.register_script(_COUNT_HITS)

    async def get(self, key: str) -> CachedImage | None:
        """The entry with its hit counted, or ``None``; raises ``CacheError``.

        One round trip (``_HIT``): a miss writes nothing, a hit bumps ``hit_count`` and
        ``last_accessed_at`` in the same step, so concurrent hits are all counted.
        """
        try:
            flat = await self._hit_script(keys=[keys.cache(key)], args=[repr(time.time())])
        except (RedisError, OSError) as exc:
            raise CacheError(f"L1 get failed: {exc}") from exc
        return None if not flat else _decode(key, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def peek(self, key: str) -> ImageInfo | None:
        """The entry without its image and without counting a hit, or ``None``; raises
        ``CacheError``. A submission looks before it knows whether the hit will answer it
        (the caller may be unknown or over their rate): it counts it with ``count_hits``
        once it did."""
        try:
            found = await self._peek_script(keys=[keys.cache(key)], args=list(_INFO_FIELDS))
        except (RedisError, OSError) as exc:
            raise CacheError(f"L1 peek failed: {exc}") from exc
        if not found:
            return None
        width, height, sha256, size, hit_count, content_type, frames = found
        try:
            return ImageInfo(
                key=key,
                width=int(width),
                height=int(height),
                sha256=sha256.decode(),
                size=int(size),
                hit_count=int(hit_count),
                content_type=content_type.decode(),
                frames=int(frames or b"1"),
            )
        except (TypeError, AttributeError, ValueError) as exc:
            raise CacheError(f"L1 entry {key} is malformed: {exc!r}") from exc

    async def count_hits(self, hits: dict[str, tuple[int, float]]) -> None:
        """Add ``hits`` (key: (how many, the last access)) to the entries still here, in one
        round trip; raises ``CacheError``."""
        if not hits:
            return
        names = [keys.cache(key) for key in hits]
        args = [f"{count} {at!r}" for count, at in hits.values()]
        try:
            await self._count_script(keys=names, args=args)
        except (RedisError, OSError) as exc:
            raise CacheError(f"L1 hit count failed: {exc}") from exc

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
