"""TieredCache's logic with in-memory layers that follow our own ``CacheLayer`` protocol."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field, replace

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from backend.cache import (
    CachedImage,
    CacheError,
    EntryTooLarge,
    ImageInfo,
    L1Layer,
    TieredCache,
)

PNG = b"\x89PNG\r\n\x1a\nfake"


@dataclass
class FakeLayer:
    """Stores in a dict; ``fail`` raises, ``hang`` never answers, ``too_large`` refuses puts."""

    name: str
    fail: bool = False
    hang: bool = False
    too_large: bool = False
    entries: dict[str, CachedImage] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    put_barrier: asyncio.Barrier | None = None

    async def _enter(self, op: str) -> None:
        self.calls.append(op)
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise CacheError(f"{self.name} {op} is down")

    async def get(self, key: str) -> CachedImage | None:
        await self._enter("get")
        image = self.entries.get(key)
        if image is None:
            return None
        self.entries[key] = image.hit(time.time())
        return self.entries[key]

    async def peek(self, key: str) -> ImageInfo | None:
        await self._enter("peek")
        image = self.entries.get(key)
        return None if image is None else image.info()

    async def count_hits(self, hits: dict[str, tuple[int, float]]) -> None:
        await self._enter("count_hits")
        for key, (count, at) in hits.items():
            if key in self.entries:
                image = self.entries[key]
                last = max(at, image.last_accessed_at)
                self.entries[key] = replace(
                    image, hit_count=image.hit_count + count, last_accessed_at=last
                )

    async def put(self, image: CachedImage) -> None:
        await self._enter("put")
        if self.put_barrier is not None:
            await self.put_barrier.wait()
        if self.too_large:
            raise EntryTooLarge(f"{image.key} is too large")
        self.entries[image.key] = image

    async def ping(self) -> None:
        await self._enter("ping")


def make_image(name: str = "sword") -> CachedImage:
    key = hashlib.sha256(name.encode()).hexdigest()
    return CachedImage.new(key, PNG, width=16, height=16, request={"description": name})


def lookups(layer: str, result: str) -> float:
    labels = {"layer": layer, "result": result}
    return REGISTRY.get_sample_value("spritequeue_cache_lookups_total", labels) or 0.0


def writes(layer: str, result: str) -> float:
    labels = {"layer": layer, "result": result}
    return REGISTRY.get_sample_value("spritequeue_cache_writes_total", labels) or 0.0


def test_fakes_follow_the_protocol() -> None:
    layer: L1Layer = FakeLayer("l1")
    assert layer.name == "l1"


def test_a_new_image_knows_its_digest_and_keeps_its_bytes_out_of_repr() -> None:
    image = make_image()
    assert (image.sha256, image.size) == (hashlib.sha256(PNG).hexdigest(), len(PNG))
    assert (image.hit_count, image.expires_at, image.content_type) == (0, None, "image/png")
    assert "png=" not in repr(image) and repr(PNG) not in repr(image)


async def test_an_l1_hit_does_not_consult_l2() -> None:
    l1, l2 = FakeLayer("l1"), FakeLayer("l2")
    image = make_image()
    l1.entries[image.key] = image
    hits = lookups("l1", "hit")

    found = await TieredCache(l1, l2, timeout_s=1).get(image.key)

    assert found is not None and found.hit_count == 1
    assert l2.calls == []
    assert lookups("l1", "hit") == hits + 1


async def test_an_l2_hit_refills_l1_with_l2_s_counters() -> None:
    l1, l2 = FakeLayer("l1"), FakeLayer("l2")
    image = make_image()
    l2.entries[image.key] = image.hit(1.0).hit(2.0)
    before = (lookups("l1", "miss"), lookups("l2", "hit"), writes("l1", "ok"))

    found = await TieredCache(l1, l2, timeout_s=1).get(image.key)

    assert found is not None and found.hit_count == 3
    assert l1.entries[image.key] == found
    assert (lookups("l1", "miss"), lookups("l2", "hit"), writes("l1", "ok")) == (
        before[0] + 1,
        before[1] + 1,
        before[2] + 1,
    )


async def test_a_miss_everywhere_is_none() -> None:
    l1, l2 = FakeLayer("l1"), FakeLayer("l2")
    misses = lookups("l2", "miss")

    assert await TieredCache(l1, l2, timeout_s=1).get(make_image().key) is None
    assert lookups("l2", "miss") == misses + 1
    assert l1.calls == ["get"]


async def test_a_failing_l1_falls_through_to_l2_and_is_logged() -> None:
    l1, l2 = FakeLayer("l1", fail=True), FakeLayer("l2")
    image = make_image()
    l2.entries[image.key] = image
    errors = lookups("l1", "error")

    with capture_logs() as logs:
        found = await TieredCache(l1, l2, timeout_s=1).get(image.key)

    assert found is not None and found.key == image.key
    assert lookups("l1", "error") == errors + 1
    failed = [e for e in logs if e["event"] == "cache_failed"]
    assert [(e["layer"], e["op"]) for e in failed] == [("l1", "get"), ("l1", "put")]
    assert failed[0]["error"] == "l1 get is down"


async def test_a_hanging_l2_is_a_miss_after_the_timeout() -> None:
    l1, l2 = FakeLayer("l1"), FakeLayer("l2", hang=True)
    errors = lookups("l2", "error")

    started = time.monotonic()
    with capture_logs() as logs:
        assert await TieredCache(l1, l2, timeout_s=0.05).get(make_image().key) is None

    assert time.monotonic() - started < 1
    assert lookups("l2", "error") == errors + 1
    assert logs[0]["error"] == "timed out after 0.05 s"


async def test_put_writes_both_layers_concurrently() -> None:
    # Each put waits at the barrier for the other: written one after the other, they'd time out.
    barrier = asyncio.Barrier(2)
    l1, l2 = FakeLayer("l1", put_barrier=barrier), FakeLayer("l2", put_barrier=barrier)
    image = make_image()
    ok = (writes("l1", "ok"), writes("l2", "ok"))

    await TieredCache(l1, l2, timeout_s=0.5).put(image)

    assert l1.entries == {image.key: image} and l2.entries == {image.key: image}
    assert (writes("l1", "ok"), writes("l2", "ok")) == (ok[0] + 1, ok[1] + 1)


async def test_a_too_large_entry_stays_in_l1_only() -> None:
    l1, l2 = FakeLayer("l1"), FakeLayer("l2", too_large=True)
    image = make_image()
    too_large, errors = writes("l2", "too_large"), writes("l2", "error")

    with capture_logs() as logs:
        await TieredCache(l1, l2, timeout_s=1).put(image)

    assert image.key in l1.entries and l2.entries == {}
    assert (writes("l2", "too_large"), writes("l2", "error")) == (too_large + 1, errors)
    assert [e["event"] for e in logs] == ["cache_entry_too_large"]


@pytest.mark.parametrize("failing", ["l1", "l2"])
async def test_a_failing_layer_does_not_stop_the_other_s_write(failing: str) -> None:
    l1, l2 = FakeLayer("l1", fail=failing == "l1"), FakeLayer("l2", fail=failing == "l2")
    healthy = l2 if failing == "l1" else l1
    image = make_image()
    errors = writes(failing, "error")

    await TieredCache(l1, l2, timeout_s=1).put(image)

    assert healthy.entries == {image.key: image}
    assert writes(failing, "error") == errors + 1


async def test_without_l2_only_l1_is_used() -> None:
    l1 = FakeLayer("l1")
    cache = TieredCache(l1, None, timeout_s=1)
    image = make_image()

    await cache.put(image)

    assert cache.l2_enabled is False
    assert await cache.get(image.key) is not None
    assert await cache.ping() == {"l1": "ok"}
    assert TieredCache(l1, FakeLayer("l2"), timeout_s=1).l2_enabled is True


async def test_ping_reports_each_layer() -> None:
    cache = TieredCache(FakeLayer("l1", hang=True), FakeLayer("l2", fail=True), timeout_s=0.05)

    assert await cache.ping() == {"l1": "timed out after 0.05 s", "l2": "l2 ping is down"}


async def test_a_peek_counts_no_hit_until_one_is_counted_and_flushed() -> None:
    l1 = FakeLayer("l1")
    image, other = make_image(), make_image("shield")
    l1.entries[image.key], l1.entries[other.key] = image, other
    cache = TieredCache(l1, None, timeout_s=1)

    info = await cache.peek(image.key)
    for _ in range(3):
        cache.count_hit(image.key)
    cache.count_hit(other.key)
    unflushed = l1.entries[image.key].hit_count

    assert info is not None and info.hit_count == 0
    assert unflushed == 0
    assert await cache.flush_hits() == 2
    assert (l1.entries[image.key].hit_count, l1.entries[other.key].hit_count) == (3, 1)
    assert l1.calls == ["peek", "count_hits"]  # the four hits, one call
    assert await cache.flush_hits() == 0 and l1.calls[-1] == "count_hits"


async def test_hits_a_failing_l1_cannot_take_are_logged_and_dropped() -> None:
    l1 = FakeLayer("l1", fail=True)
    cache = TieredCache(l1, None, timeout_s=1)
    cache.count_hit(make_image().key)

    with capture_logs() as logs:
        assert await cache.flush_hits() == 0

    assert [e["event"] for e in logs] == ["cache_hits_not_counted"]
    l1.fail = False
    assert await cache.flush_hits() == 0  # statistics: not kept for a retry


async def test_a_peek_of_a_failing_l1_is_a_logged_miss() -> None:
    l1 = FakeLayer("l1", fail=True)
    errors = lookups("l1", "error")

    with capture_logs() as logs:
        assert await TieredCache(l1, FakeLayer("l2"), timeout_s=1).peek(make_image().key) is None

    assert lookups("l1", "error") == errors + 1
    assert [(e["event"], e["op"]) for e in logs] == [("cache_failed", "get")]


async def test_an_l2_description_is_counted_in_l2_and_refills_l1() -> None:
    l1, l2 = FakeLayer("l1"), FakeLayer("l2")
    image = make_image()
    l2.entries[image.key] = image
    cache = TieredCache(l1, l2, timeout_s=1)

    info = await cache.describe_from_l2(image.key)

    assert info is not None and info.hit_count == 1
    assert l1.entries[image.key].hit_count == 1
    assert await TieredCache(l1, None, timeout_s=1).describe_from_l2(image.key) is None
