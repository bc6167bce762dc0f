"""The tiered cache with a real backend down: every failure is a counted miss, never an error."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from google.cloud import firestore
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from backend.cache import CachedImage, FirestoreL2, RedisL1, TieredCache
from backend.embedded_redis import free_port
from backend.store import keys

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
COLLECTION = "sprite_cache"


def make_image() -> CachedImage:
    request = {"description": f"chest {uuid.uuid4()}", "image_size": {"width": 64, "height": 64}}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    return CachedImage.new(key, PNG, width=64, height=64, request=request)


def sample(metric: str, layer: str, result: str) -> float:
    return REGISTRY.get_sample_value(metric, {"layer": layer, "result": result}) or 0.0


@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    yield client
    await client.aclose()


async def test_l1_down_is_a_miss_and_put_does_not_raise(dead_redis: aioredis.Redis) -> None:
    cache = TieredCache(RedisL1(dead_redis, ttl_s=3600), None, timeout_s=2.0)
    image = make_image()
    lookups = sample("spritequeue_cache_lookups_total", "l1", "error")
    writes = sample("spritequeue_cache_writes_total", "l1", "error")

    with capture_logs() as logs:
        assert await cache.get(image.key) is None
        await cache.put(image)

    assert sample("spritequeue_cache_lookups_total", "l1", "error") == lookups + 1
    assert sample("spritequeue_cache_writes_total", "l1", "error") == writes + 1
    failures = [(e["layer"], e["op"]) for e in logs if e["event"] == "cache_failed"]
    assert failures == [("l1", "get"), ("l1", "put")]
    assert all(PNG not in repr(entry).encode() for entry in logs)
    health = await cache.ping()
    assert list(health) == ["l1"] and health["l1"] != "ok"


async def test_l2_unreachable_is_a_miss_within_the_timeout(
    redis: aioredis.Redis, unreachable_firestore_client: firestore.AsyncClient
) -> None:
    l2 = FirestoreL2(unreachable_firestore_client, collection=COLLECTION, max_bytes=900_000)
    cache = TieredCache(RedisL1(redis, ttl_s=3600), l2, timeout_s=0.5)
    image = make_image()
    lookups = {r: sample("spritequeue_cache_lookups_total", "l2", r) for r in ("error", "miss")}
    l1_misses = sample("spritequeue_cache_lookups_total", "l1", "miss")

    started = time.monotonic()
    assert await cache.get(image.key) is None
    elapsed = time.monotonic() - started

    assert elapsed < 1.5
    assert sample("spritequeue_cache_lookups_total", "l1", "miss") == l1_misses + 1
    assert sample("spritequeue_cache_lookups_total", "l2", "error") == lookups["error"] + 1
    assert sample("spritequeue_cache_lookups_total", "l2", "miss") == lookups["miss"]


async def test_l2_unreachable_put_still_fills_l1(
    redis: aioredis.Redis, unreachable_firestore_client: firestore.AsyncClient
) -> None:
    l2 = FirestoreL2(unreachable_firestore_client, collection=COLLECTION, max_bytes=900_000)
    cache = TieredCache(RedisL1(redis, ttl_s=3600), l2, timeout_s=0.5)
    image = make_image()
    writes = {
        layer: sample("spritequeue_cache_writes_total", layer, "ok") for layer in ("l1", "l2")
    }
    l2_errors = sample("spritequeue_cache_writes_total", "l2", "error")

    await cache.put(image)

    assert await redis.hget(keys.cache(image.key), "png") == PNG
    assert sample("spritequeue_cache_writes_total", "l1", "ok") == writes["l1"] + 1
    assert sample("spritequeue_cache_writes_total", "l2", "ok") == writes["l2"]
    assert sample("spritequeue_cache_writes_total", "l2", "error") == l2_errors + 1
    found = await cache.get(image.key)
    assert found is not None and found.hit_count == 1
    health = await cache.ping()
    assert health["l1"] == "ok" and health["l2"] != "ok"


@pytest.mark.firestore
async def test_l1_down_is_served_from_l2(
    dead_redis: aioredis.Redis, firestore_client: firestore.AsyncClient
) -> None:
    l2 = FirestoreL2(firestore_client, collection=COLLECTION, max_bytes=900_000)
    cache = TieredCache(RedisL1(dead_redis, ttl_s=3600), l2, timeout_s=5.0)
    image = make_image()
    refills_failed = sample("spritequeue_cache_writes_total", "l1", "error")

    await cache.put(image)
    found = await cache.get(image.key)

    assert found is not None and found.png == PNG and found.hit_count == 1
    # One failed write from put, one from the refill after the L2 hit.
    assert sample("spritequeue_cache_writes_total", "l1", "error") == refills_failed + 2
    health = await cache.ping()
    assert health["l1"] != "ok" and health["l2"] == "ok"
