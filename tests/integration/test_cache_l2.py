"""FirestoreL2 on the official emulator, alone and behind the tiered cache with a real L1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from google.cloud import firestore
from prometheus_client import REGISTRY

from backend.cache import (
    CachedImage,
    EntryTooLarge,
    FirestoreL2,
    RedisL1,
    TieredCache,
    create_firestore_client,
)
from backend.config import FirestoreSettings
from backend.store import keys

pytestmark = pytest.mark.firestore

COLLECTION = "sprite_cache"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
DAY_S = 24 * 3600


def make_image(png: bytes = PNG, **overrides: Any) -> CachedImage:
    request = {"description": f"slime {uuid.uuid4()}", "image_size": {"width": 16, "height": 16}}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    return replace(CachedImage.new(key, png, width=16, height=16, request=request), **overrides)


def sample(metric: str, layer: str, result: str) -> float:
    return REGISTRY.get_sample_value(metric, {"layer": layer, "result": result}) or 0.0


@pytest.fixture
def l2(firestore_client: firestore.AsyncClient) -> FirestoreL2:
    return FirestoreL2(firestore_client, collection=COLLECTION, max_bytes=900_000)


@pytest.fixture
def tiered(redis: aioredis.Redis, l2: FirestoreL2) -> TieredCache:
    return TieredCache(RedisL1(redis, ttl_s=3600), l2, timeout_s=5.0)


async def document(client: firestore.AsyncClient, key: str) -> dict[str, Any] | None:
    snapshot = await client.collection(COLLECTION).document(key).get()
    return snapshot.to_dict() if snapshot.exists else None


async def test_put_writes_through_to_both_layers(
    tiered: TieredCache, redis: aioredis.Redis, firestore_client: firestore.AsyncClient
) -> None:
    image = make_image()

    await tiered.put(image)

    assert await redis.hget(keys.cache(image.key), "png") == PNG
    stored = await document(firestore_client, image.key)
    assert stored is not None
    assert stored["png"] == PNG and stored["request"] == image.request
    assert (stored["sha256"], stored["size"], stored["hit_count"]) == (image.sha256, len(PNG), 0)
    # Timestamps, not numbers: a Firestore TTL policy on ``expires_at`` needs one.
    assert isinstance(stored["expires_at"], datetime)
    assert stored["created_at"].timestamp() == pytest.approx(image.created_at, abs=1e-3)
    assert stored["expires_at"] - stored["created_at"] == timedelta(days=30)


async def test_an_l2_hit_after_l1_is_flushed_refills_l1(
    tiered: TieredCache, redis: aioredis.Redis
) -> None:
    image = make_image()
    await tiered.put(image)
    await redis.flushall()
    before = {r: sample("spritequeue_cache_lookups_total", "l2", r) for r in ("hit", "miss")}

    from_l2 = await tiered.get(image.key)

    assert from_l2 is not None and from_l2.png == PNG and from_l2.hit_count == 1
    assert sample("spritequeue_cache_lookups_total", "l2", "hit") == before["hit"] + 1
    refilled = await redis.hgetall(keys.cache(image.key))
    assert refilled[b"png"] == PNG and refilled[b"hit_count"] == b"1"

    from_l1 = await tiered.get(image.key)

    assert from_l1 is not None and from_l1.hit_count == 2
    assert sample("spritequeue_cache_lookups_total", "l2", "hit") == before["hit"] + 1
    assert sample("spritequeue_cache_lookups_total", "l2", "miss") == before["miss"]


async def test_a_hit_increments_the_counter_and_stamps_the_access(
    l2: FirestoreL2, firestore_client: firestore.AsyncClient
) -> None:
    old = time.time() - 3600
    image = make_image(created_at=old, last_accessed_at=old)
    await l2.put(image)

    found = await l2.get(image.key)

    assert found is not None and found.png == PNG and found.hit_count == 1
    stored = await document(firestore_client, image.key)
    assert stored is not None and stored["hit_count"] == 1
    assert stored["last_accessed_at"].timestamp() > old + 3000
    again = await l2.get(image.key)
    assert again is not None and again.hit_count == 2


async def test_fifty_concurrent_hits_are_all_counted(
    l2: FirestoreL2, firestore_client: firestore.AsyncClient
) -> None:
    image = make_image()
    await l2.put(image)

    found = await asyncio.gather(*(l2.get(image.key) for _ in range(50)))

    assert all(f is not None and f.png == PNG for f in found)
    stored = await document(firestore_client, image.key)
    assert stored is not None and stored["hit_count"] == 50


async def test_an_expired_document_is_a_miss_and_is_deleted(
    l2: FirestoreL2, firestore_client: firestore.AsyncClient
) -> None:
    # What a TTL policy leaves until it gets round to deleting: a document past expires_at.
    image = make_image()
    await l2.put(image)
    ref = firestore_client.collection(COLLECTION).document(image.key)
    await ref.update({"expires_at": datetime.now(UTC) - timedelta(seconds=1)})

    assert await l2.get(image.key) is None
    assert await document(firestore_client, image.key) is None


async def test_an_entry_older_than_the_ttl_is_not_stored(
    l2: FirestoreL2, firestore_client: firestore.AsyncClient
) -> None:
    created = time.time() - 31 * DAY_S
    image = make_image(created_at=created, last_accessed_at=created)

    await l2.put(image)

    assert await document(firestore_client, image.key) is None
    assert await l2.get(image.key) is None


async def test_a_too_large_entry_is_rejected_and_kept_in_l1_only(
    redis: aioredis.Redis, firestore_client: firestore.AsyncClient
) -> None:
    l2 = FirestoreL2(firestore_client, collection=COLLECTION, max_bytes=1000)
    tiered = TieredCache(RedisL1(redis, ttl_s=3600), l2, timeout_s=5.0)
    image = make_image(png=b"\x89PNG" + b"\x00" * 2000)
    with pytest.raises(EntryTooLarge):
        await l2.put(image)
    too_large = sample("spritequeue_cache_writes_total", "l2", "too_large")

    await tiered.put(image)

    assert sample("spritequeue_cache_writes_total", "l2", "too_large") == too_large + 1
    assert await document(firestore_client, image.key) is None
    found = await tiered.get(image.key)
    assert found is not None and found.png == image.png


async def test_ping_answers(l2: FirestoreL2) -> None:
    await l2.ping()


async def test_client_factory(firestore_emulator: str) -> None:
    assert create_firestore_client(FirestoreSettings()) is None
    client = create_firestore_client(FirestoreSettings(project="spritequeue-test"))
    assert client is not None and client.project == "spritequeue-test"
