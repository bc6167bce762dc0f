"""RedisL1 against a real Valkey: round trips, hit counting, TTLs, misses and a dead server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from backend.cache import CachedImage, CacheError, RedisL1
from backend.embedded_redis import free_port
from backend.store import keys

# Every byte value, so a decode or a text round trip anywhere would show.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def make_image(png: bytes = PNG, **overrides: Any) -> CachedImage:
    request = {"description": f"knight {uuid.uuid4()}", "image_size": {"width": 32, "height": 32}}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    image = CachedImage.new(key, png, width=32, height=32, request=request)
    return replace(image, **overrides)


@pytest.fixture
def l1(redis: aioredis.Redis) -> RedisL1:
    return RedisL1(redis, ttl_s=3600)


@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    yield client
    await client.aclose()


async def test_put_then_get_returns_the_exact_entry(l1: RedisL1) -> None:
    image = make_image()
    await l1.put(image)

    found = await l1.get(image.key)

    assert found is not None
    assert found.png == PNG
    assert found.sha256 == hashlib.sha256(PNG).hexdigest()
    assert (found.key, found.width, found.height, found.size) == (image.key, 32, 32, len(PNG))
    assert (found.content_type, found.request) == ("image/png", image.request)
    assert found.created_at == image.created_at
    assert found.hit_count == 1


async def test_stored_as_plain_fields_with_the_png_raw(l1: RedisL1, redis: aioredis.Redis) -> None:
    image = make_image()
    await l1.put(image)

    stored = await redis.hgetall(keys.cache(image.key))

    assert stored[b"png"] == PNG
    assert json.loads(stored[b"request"]) == image.request
    assert stored[b"hit_count"] == b"0"
    assert float(stored[b"created_at"]) == image.created_at


async def test_miss_returns_none_and_leaves_no_key(l1: RedisL1, redis: aioredis.Redis) -> None:
    key = hashlib.sha256(b"never stored").hexdigest()

    assert await l1.get(key) is None
    assert await redis.exists(keys.cache(key)) == 0
    assert await redis.dbsize() == 0


async def test_hits_count_and_move_last_accessed_at(l1: RedisL1, redis: aioredis.Redis) -> None:
    image = make_image(created_at=time.time() - 60, last_accessed_at=time.time() - 60)
    await l1.put(image)

    first = await l1.get(image.key)
    await asyncio.sleep(0.01)
    second = await l1.get(image.key)

    assert first is not None and second is not None
    assert (first.hit_count, second.hit_count) == (1, 2)
    assert image.last_accessed_at < first.last_accessed_at < second.last_accessed_at
    stored = await redis.hmget(keys.cache(image.key), ["hit_count", "last_accessed_at"])
    assert stored == [b"2", repr(second.last_accessed_at).encode()]


async def test_concurrent_hits_are_all_counted(l1: RedisL1, redis: aioredis.Redis) -> None:
    image = make_image()
    await l1.put(image)

    found = await asyncio.gather(*(l1.get(image.key) for _ in range(50)))

    assert sorted(f.hit_count for f in found if f is not None) == list(range(1, 51))
    assert await redis.hget(keys.cache(image.key), "hit_count") == b"50"


async def test_put_sets_the_ttl(l1: RedisL1, redis: aioredis.Redis) -> None:
    image = make_image()
    await l1.put(image)

    ttl_ms = await redis.pttl(keys.cache(image.key))

    assert 3_590_000 < ttl_ms <= 3_600_000


async def test_ttl_never_outlives_the_entry_s_own_expiry(
    l1: RedisL1, redis: aioredis.Redis
) -> None:
    image = make_image(expires_at=time.time() + 10)
    await l1.put(image)

    assert 0 < await redis.pttl(keys.cache(image.key)) <= 10_000
    found = await l1.get(image.key)
    assert found is not None and found.expires_at == image.expires_at


async def test_an_expired_entry_is_not_stored(l1: RedisL1, redis: aioredis.Redis) -> None:
    image = make_image(expires_at=time.time() - 1)

    await l1.put(image)

    assert await redis.exists(keys.cache(image.key)) == 0


async def test_a_hash_without_png_reads_as_a_miss(l1: RedisL1, redis: aioredis.Redis) -> None:
    # What a two-step hit (read, then count) once left behind when the entry expired between
    # the steps: counters without an entry. A hit is one script now; a stray hash still reads
    # as a miss and is not counted.
    key = hashlib.sha256(b"orphan").hexdigest()
    await redis.hset(keys.cache(key), mapping={"hit_count": 3, "last_accessed_at": "1.0"})

    assert await l1.get(key) is None
    assert await redis.hget(keys.cache(key), "hit_count") == b"3"


async def test_peek_counts_nothing_and_leaves_the_png_in_redis(
    l1: RedisL1, redis: aioredis.Redis
) -> None:
    image = make_image()
    await l1.put(image)

    info = await l1.peek(image.key)
    stored = await redis.hmget(keys.cache(image.key), ["hit_count", "last_accessed_at"])

    assert info == image.info()
    assert stored == [b"0", repr(image.last_accessed_at).encode()]
    assert await l1.peek(hashlib.sha256(b"absent").hexdigest()) is None


async def test_counted_hits_add_up_in_one_round_trip_and_skip_evicted_entries(
    l1: RedisL1, redis: aioredis.Redis
) -> None:
    hot, cold = make_image(), make_image()
    await l1.put(hot)
    await l1.put(cold)
    gone = hashlib.sha256(b"evicted").hexdigest()
    later = hot.last_accessed_at + 60

    await l1.count_hits({hot.key: (3, later), gone: (2, later)})
    await l1.count_hits({hot.key: (1, later - 30), cold.key: (2, later)})

    hot_fields = await redis.hmget(keys.cache(hot.key), ["hit_count", "last_accessed_at"])
    assert hot_fields == [b"4", repr(later).encode()]  # an older access time stays behind
    assert await redis.hget(keys.cache(cold.key), "hit_count") == b"2"
    assert await redis.exists(keys.cache(gone)) == 0  # no hash without its image
    found = await l1.get(hot.key)
    assert found is not None and found.hit_count == 5


async def test_peek_and_count_of_a_dead_server_raise_cache_error(
    dead_redis: aioredis.Redis,
) -> None:
    l1 = RedisL1(dead_redis, ttl_s=3600)
    with pytest.raises(CacheError):
        await l1.peek(make_image().key)
    with pytest.raises(CacheError):
        await l1.count_hits({make_image().key: (1, 1.0)})


async def test_a_malformed_entry_raises_cache_error(l1: RedisL1, redis: aioredis.Redis) -> None:
    key = hashlib.sha256(b"malformed").hexdigest()
    await redis.hset(keys.cache(key), mapping={"png": PNG, "request": "{not json"})

    with pytest.raises(CacheError, match="malformed"):
        await l1.get(key)


async def test_a_dead_redis_raises_cache_error(dead_redis: aioredis.Redis) -> None:
    l1 = RedisL1(dead_redis, ttl_s=3600)

    with pytest.raises(CacheError) as get_error:
        await l1.get(make_image().key)
    with pytest.raises(CacheError):
        await l1.put(make_image())
    with pytest.raises(CacheError):
        await l1.ping()

    assert isinstance(get_error.value.__cause__, RedisError)


async def test_ping_answers(l1: RedisL1) -> None:
    await l1.ping()
