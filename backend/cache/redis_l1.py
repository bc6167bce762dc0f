"""L1: one Redis hash per entry at ``keys.cache(key)``, PNG bytes raw, metadata as plain fields."""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from backend.cache.base import CachedImage, CacheError, ImageInfo
from backend.store import keys

_PNG = b"png"

# A hit: count it and read the entry in one step (a miss writes nothing). ARGV[2] "1" reads
# the PNG too; otherwise only the small fields leave Redis.
_HIT = """
if redis.call("HEXISTS", KEYS[1], "png") == 0 then
  return false
end
redis.call("HINCRBY", KEYS[1], "hit_count", 1)
redis.call("HSET", KEYS[1], "last_accessed_at", ARGV[1])
local all = redis.call("HGETALL", KEYS[1])
if ARGV[2] == "1" then
  return all
end
local small = {}
for i = 1, #all, 2 do
  if all[i] ~= "png" then
    small[#small + 1] = all[i]
    small[#small + 1] = all[i + 1]
  end
end
return small
"""


class RedisL1:
    """The Redis layer. The client must use ``decode_responses=False``: the PNG is raw bytes."""

    name = "l1"

    def __init__(self, redis: aioredis.Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._hit_script = redis.register_script(_HIT)

    async def get(self, key: str) -> CachedImage | None:
        """The entry with its hit counted, or ``None``; raises ``CacheError``.

        One round trip (``_HIT``): a miss writes nothing, a hit bumps ``hit_count`` and
        ``last_accessed_at`` in the same step, so concurrent hits are all counted.
        """
        fields = await self._hit(key, with_png=True)
        return None if fields is None else _decode(key, fields)

    async def describe(self, key: str) -> ImageInfo | None:
        """``get`` without moving the PNG: a cache-hit submission only needs to know it is
        there (its size, digest, dimensions), and the result route reads the image later."""
        fields = await self._hit(key, with_png=False)
        if fields is None:
            return None
        try:
            return ImageInfo(
                key=key,
                width=int(fields[b"width"]),
                height=int(fields[b"height"]),
                sha256=fields[b"sha256"].decode(),
                size=int(fields[b"size"]),
                hit_count=int(fields[b"hit_count"]),
                content_type=fields[b"content_type"].decode(),
                frames=int(fields.get(b"frames", b"1")),
            )
        except (KeyError, ValueError) as exc:
            raise CacheError(f"L1 entry {key} is malformed: {exc!r}") from exc

    async def _hit(self, key: str, *, with_png: bool) -> dict[bytes, bytes] | None:
        try:
            flat = await self._hit_script(
                keys=[keys.cache(key)], args=[repr(time.time()), "1" if with_png else ""]
            )
        except (RedisError, OSError) as exc:
            raise CacheError(f"L1 get failed: {exc}") from exc
        if not flat:
            return None
        return dict(zip(flat[::2], flat[1::2], strict=True))

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
