"""The tiered cache: L1 then L2 on read, write-through to both; a backend failure is a miss."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from backend.cache.base import (
    CachedImage,
    CacheError,
    CacheLayer,
    EntryTooLarge,
    ImageInfo,
    L1Layer,
)
from backend.metrics import CACHE_LOOKUPS, CACHE_WRITES

logger = structlog.get_logger(__name__)
T = TypeVar("T")


class TieredCache:
    """Reads L1, then L2 (refilling L1 on an L2 hit); writes both at once.

    Every layer call is bounded by ``timeout_s``. A failing or slow layer is logged
    (``cache_failed``), counted (``result="error"``) and then treated as a miss or a skipped
    write: no method here raises because a backend is down. ``l2`` is ``None`` when Firestore
    is not configured.
    """

    def __init__(
        self,
        l1: L1Layer,
        l2: CacheLayer | None,
        *,
        timeout_s: float,
        write_timeout_s: float | None = None,
    ) -> None:
        self._l1 = l1
        self._l2 = l2
        self._timeout_s = timeout_s
        # Writes happen off the request path, after a paid generation: losing one to a busy
        # event loop costs a PixelLab call later, so they get longer than reads.
        self._write_timeout_s = write_timeout_s or timeout_s
        self._hits: dict[str, tuple[int, float]] = {}  # key: (hits, last at), until flushed

    @property
    def l2_enabled(self) -> bool:
        return self._l2 is not None

    @property
    def _layers(self) -> list[CacheLayer]:
        return [self._l1] if self._l2 is None else [self._l1, self._l2]

    async def get(self, key: str) -> CachedImage | None:
        """The entry from the first layer that has it, or ``None``."""
        image = await self._get(self._l1, key)
        if image is not None or self._l2 is None:
            return image
        image = await self._get(self._l2, key)
        if image is not None:
            # The refill carries L2's counters, so L1 goes on counting from where L2 was.
            await self._put(self._l1, image)
        return image

    async def peek(self, key: str) -> ImageInfo | None:
        """The L1 entry without its image and without counting it, or ``None`` (a miss, or
        L1 failing): a submission's look before it knows whether the hit answers it. Count
        a hit that did with ``count_hit``."""
        return await self._read(self._l1, key, self._l1.peek)

    async def describe_from_l2(self, key: str) -> ImageInfo | None:
        """After an L1 miss: L2's entry without its image, its hit counted there, and L1
        refilled as ``get`` does; ``None`` without an L2."""
        if self._l2 is None:
            return None
        image = await self._get(self._l2, key)
        if image is None:
            return None
        await self._put(self._l1, image)
        return image.info()

    def count_hit(self, key: str) -> None:
        """Count a hit ``peek`` found that answered a request. Hits are added to L1 in one
        round trip a flush (``flush_hits``), not one each: a hot sprite's hits are one write
        a second, and a hit costs the submission no round trip of its own."""
        count, _ = self._hits.get(key, (0, 0.0))
        self._hits[key] = (count + 1, time.time())

    async def flush_hits(self) -> int:
        """Add the hits counted since the last flush to L1; the number of entries written.
        A failing L1 loses them (logged): they are statistics, not state."""
        hits, self._hits = self._hits, {}
        if not hits:
            return 0
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._l1.count_hits(hits)
        except asyncio.CancelledError:  # a shutdown: its last flush writes them
            for key, (count, at) in hits.items():
                now_count, now_at = self._hits.get(key, (0, 0.0))
                self._hits[key] = (count + now_count, max(at, now_at))
            raise
        except (CacheError, TimeoutError) as exc:
            logger.warning("cache_hits_not_counted", layer=self._l1.name, entries=len(hits),
                           error=self._describe(exc))  # fmt: skip
            return 0
        return len(hits)

    async def put(self, image: CachedImage) -> bool:
        """Write ``image`` to every layer concurrently; failures are logged and skipped.

        Returns whether at least one layer holds it now (a caller holding a paid-for image
        may want to try again rather than lose it).
        """
        return any(await asyncio.gather(*(self._put(layer, image) for layer in self._layers)))

    async def ping(self) -> dict[str, str]:
        """``{layer name: "ok" or what went wrong}``, for the readiness check.

        A disabled L2 is absent; ``l2_enabled`` says whether it is configured.
        """
        results = await asyncio.gather(*(self._ping(layer) for layer in self._layers))
        return {layer.name: result for layer, result in zip(self._layers, results, strict=True)}

    async def _get(self, layer: CacheLayer, key: str) -> CachedImage | None:
        return await self._read(layer, key, layer.get)

    async def _read(
        self, layer: CacheLayer, key: str, read: Callable[[str], Awaitable[T | None]]
    ) -> T | None:
        """``read(key)`` on ``layer`` within the read timeout, counted as a hit, a miss or
        an error; a failure is logged and answers ``None``."""
        try:
            async with asyncio.timeout(self._timeout_s):
                found = await read(key)
        except (CacheError, TimeoutError) as exc:
            self._log_failure(layer, "get", key, exc)
            CACHE_LOOKUPS.labels(layer.name, "error").inc()
            return None
        CACHE_LOOKUPS.labels(layer.name, "miss" if found is None else "hit").inc()
        return found

    async def _put(self, layer: CacheLayer, image: CachedImage) -> bool:
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await layer.put(image)
        except EntryTooLarge:
            logger.warning(
                "cache_entry_too_large", layer=layer.name, key=image.key, size=len(image.png)
            )
            CACHE_WRITES.labels(layer.name, "too_large").inc()
            return False
        except (CacheError, TimeoutError) as exc:
            self._log_failure(layer, "put", image.key, exc)
            CACHE_WRITES.labels(layer.name, "error").inc()
            return False
        CACHE_WRITES.labels(layer.name, "ok").inc()
        return True

    async def _ping(self, layer: CacheLayer) -> str:
        try:
            async with asyncio.timeout(self._timeout_s):
                await layer.ping()
        except (CacheError, TimeoutError) as exc:
            return self._describe(exc)
        return "ok"

    def _log_failure(self, layer: CacheLayer, op: str, key: str, exc: Exception) -> None:
        logger.warning("cache_failed", layer=layer.name, op=op, key=key, error=self._describe(exc))

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, TimeoutError):
            return f"timed out after {self._timeout_s} s"
        return str(exc)
