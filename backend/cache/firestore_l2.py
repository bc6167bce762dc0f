"""L2: one Firestore document per entry, id = cache key, with an ``expires_at`` for a TTL policy."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from google.api_core import exceptions as google_exceptions
from google.auth.exceptions import GoogleAuthError
from google.cloud import firestore

from backend.cache.base import CachedImage, CacheError, EntryTooLarge
from backend.config import FirestoreSettings

logger = structlog.get_logger(__name__)

_DAY_S = 24 * 3600
# Any id that is not a 64-digit hex cache key will do; reading a missing document is cheap.
_PING_DOCUMENT = "ping"


class FirestoreL2:
    """The Firestore layer.

    Calls carry no deadline of their own: the library retries an unreachable backend for
    minutes (a per-call ``timeout`` does not bound its retries), so the caller bounds each call,
    as ``TieredCache`` does with ``asyncio.timeout``; cancelling also stops the retries.
    """

    name = "l2"

    def __init__(
        self,
        client: firestore.AsyncClient,
        *,
        collection: str,
        ttl_days: int = 30,
        max_bytes: int,
    ) -> None:
        self._client = client
        self._collection = client.collection(collection)
        self._ttl_s = ttl_days * _DAY_S
        self._max_bytes = max_bytes

    async def get(self, key: str) -> CachedImage | None:
        """The entry with its hit counted, or ``None``; raises ``CacheError``.

        An entry past ``expires_at`` is a miss even while the TTL policy (which may lag by a
        day) has not deleted it yet. The hit is counted with a server-side increment, so
        concurrent hits are never lost; the returned counters are this reader's view of them.
        """
        ref = self._collection.document(key)
        try:
            snapshot = await ref.get()
        except google_exceptions.GoogleAPIError as exc:
            raise CacheError(f"L2 get failed: {exc}") from exc
        if not snapshot.exists:
            return None
        image = _decode(key, snapshot.to_dict() or {})
        now = time.time()
        if image.expires_at is not None and image.expires_at <= now:
            await self._delete_expired(ref, snapshot.update_time)
            return None
        await self._count_hit(ref)
        return image.hit(now)

    async def put(self, image: CachedImage) -> None:
        """Store ``image`` until ``created_at + ttl_days`` (or its own earlier ``expires_at``).

        Raises ``EntryTooLarge`` when the PNG exceeds ``max_bytes``, ``CacheError`` otherwise.
        """
        if len(image.png) > self._max_bytes:
            raise EntryTooLarge(
                f"L2 entry {image.key} is {len(image.png)} bytes, over {self._max_bytes}"
            )
        expires_at = image.expires_within(self._ttl_s, image.created_at)
        if expires_at <= time.time():
            return  # already past its expiry: it would only ever read as a miss
        try:
            await self._collection.document(image.key).set(_encode(image, expires_at))
        except google_exceptions.GoogleAPIError as exc:
            raise CacheError(f"L2 put failed: {exc}") from exc

    async def ping(self) -> None:
        """Raises ``CacheError`` when Firestore does not answer."""
        try:
            await self._collection.document(_PING_DOCUMENT).get()
        except google_exceptions.GoogleAPIError as exc:
            raise CacheError(f"L2 ping failed: {exc}") from exc

    async def _count_hit(self, ref: firestore.AsyncDocumentReference) -> None:
        # The image is already read: losing one count (the document was deleted since, or
        # writes to a hot document are being throttled) must not turn the hit into a miss.
        try:
            await ref.update(
                {
                    "hit_count": firestore.Increment(1),
                    "last_accessed_at": firestore.SERVER_TIMESTAMP,
                }
            )
        except google_exceptions.NotFound:
            pass
        except google_exceptions.GoogleAPIError as exc:
            logger.warning("cache_hit_not_counted", layer=self.name, key=ref.id, error=str(exc))

    async def _delete_expired(
        self, ref: firestore.AsyncDocumentReference, read_at: datetime | None
    ) -> None:
        # The precondition keeps a fresh entry written since our read; any failure is left to
        # the TTL policy, which deletes the document anyway.
        option = self._client.write_option(last_update_time=read_at) if read_at else None
        with contextlib.suppress(google_exceptions.GoogleAPIError):
            await ref.delete(option=option)


def create_firestore_client(settings: FirestoreSettings) -> firestore.AsyncClient | None:
    """A client for ``settings.project``, or ``None`` when no project is set (L2 off).

    ``FIRESTORE_EMULATOR_HOST`` is honoured by the library. Raises ``CacheError`` when no
    credentials can be found.
    """
    if not settings.project:
        return None
    try:
        return firestore.AsyncClient(project=settings.project, database=settings.database)
    except GoogleAuthError as exc:
        raise CacheError(f"Firestore credentials not found: {exc}") from exc


def _encode(image: CachedImage, expires_at: float) -> dict[str, Any]:
    return {
        "request": image.request,
        "png": image.png,
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
        "sha256": image.sha256,
        "size": image.size,
        "created_at": _timestamp(image.created_at),
        "last_accessed_at": _timestamp(image.last_accessed_at),
        "hit_count": image.hit_count,
        "expires_at": _timestamp(expires_at),
        "frames": image.frames,
    }


def _decode(key: str, data: dict[str, Any]) -> CachedImage:
    try:
        png, request = data["png"], data["request"]
        if not isinstance(png, bytes) or not isinstance(request, dict):
            raise ValueError("png or request has the wrong type")
        expires_at = data.get("expires_at")
        return CachedImage(
            key=key,
            png=png,
            content_type=str(data["content_type"]),
            width=int(data["width"]),
            height=int(data["height"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            request=request,
            created_at=_epoch(data["created_at"]),
            last_accessed_at=_epoch(data["last_accessed_at"]),
            hit_count=int(data.get("hit_count", 0)),
            expires_at=None if expires_at is None else _epoch(expires_at),
            frames=int(data.get("frames", 1)),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CacheError(f"L2 entry {key} is malformed: {exc!r}") from exc


def _timestamp(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def _epoch(value: object) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    raise ValueError(f"not a timestamp: {value!r}")
