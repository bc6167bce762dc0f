"""What every cache layer stores and promises: ``CachedImage``, ``CacheLayer``, the errors."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from backend.errors import SpriteQueueError

CONTENT_TYPE_PNG = "image/png"


class CacheError(SpriteQueueError):
    """A cache backend failed (unreachable, timed out, refused the write, returned garbage).

    Layers raise it; ``TieredCache`` catches it, so it never reaches a request.
    """

    code = "cache_error"


class EntryTooLarge(CacheError):
    """The entry exceeds what the layer can store (Firestore documents are capped at 1 MiB)."""

    code = "cache_entry_too_large"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An entry without its image: what a cache-hit submission answers with."""

    key: str
    width: int
    height: int
    sha256: str
    size: int
    hit_count: int
    content_type: str = CONTENT_TYPE_PNG
    frames: int = 1

    @property
    def frame_width(self) -> int:
        return self.width // self.frames


@dataclass(frozen=True, slots=True)
class CachedImage:
    """One generated sprite with its request and usage counters.

    A multi-frame result is one entry: ``png`` is a horizontal sprite sheet of ``frames``
    equally wide frames (``backend.sprites``); ``width`` and ``height`` are the sheet's.

    ``expires_at`` is when the entry leaves the layer it was read from (``None``: not yet
    stored). ``png`` is left out of ``repr`` so an image never ends up in a log line.
    """

    key: str
    png: bytes = field(repr=False)
    width: int
    height: int
    sha256: str
    size: int
    request: dict[str, Any]
    created_at: float
    last_accessed_at: float
    hit_count: int = 0
    expires_at: float | None = None
    content_type: str = CONTENT_TYPE_PNG
    frames: int = 1

    @property
    def frame_width(self) -> int:
        return self.width // self.frames

    @classmethod
    def new(
        cls,
        key: str,
        png: bytes,
        *,
        width: int,
        height: int,
        request: dict[str, Any],
        now: float | None = None,
        frames: int = 1,
    ) -> CachedImage:
        """A fresh entry for ``png``, with its digest and size filled in and no hits yet."""
        created = time.time() if now is None else now
        return cls(
            key=key,
            png=png,
            width=width,
            height=height,
            sha256=hashlib.sha256(png).hexdigest(),
            size=len(png),
            request=request,
            created_at=created,
            last_accessed_at=created,
            frames=frames,
        )

    def info(self) -> ImageInfo:
        return ImageInfo(
            key=self.key,
            width=self.width,
            height=self.height,
            sha256=self.sha256,
            size=self.size,
            hit_count=self.hit_count,
            content_type=self.content_type,
            frames=self.frames,
        )

    def hit(self, now: float) -> CachedImage:
        """This entry as it reads after one more hit at ``now``."""
        return replace(self, hit_count=self.hit_count + 1, last_accessed_at=now)

    def expires_within(self, ttl_s: float, now: float) -> float:
        """The earlier of ``now + ttl_s`` and the entry's own expiry."""
        limit = now + ttl_s
        return limit if self.expires_at is None else min(limit, self.expires_at)


class CacheLayer(Protocol):
    """One storage tier. Every method raises ``CacheError`` when its backend fails."""

    name: str

    async def get(self, key: str) -> CachedImage | None:
        """The entry, or ``None``; a hit atomically counts itself and stamps its access time."""
        ...

    async def put(self, image: CachedImage) -> None:
        """Store ``image``, replacing any entry with its key."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise ``CacheError`` otherwise."""
        ...


class L1Layer(CacheLayer, Protocol):
    """The first tier, which a submission can look into without moving the image and whose
    hits are counted in batches (``TieredCache.count_hit``)."""

    async def peek(self, key: str) -> ImageInfo | None:
        """The entry without its image and without counting a hit, or ``None``."""
        ...

    async def count_hits(self, hits: dict[str, tuple[int, float]]) -> None:
        """Add ``hits`` (key: (how many, the last access at)) to the entries still stored."""
        ...
