"""Input images, kept once by content: ``sq:input:{sha256}`` holds the PNG's raw bytes.

A job's record names its inputs by digest only (``backend.inputs``), so a multi-MiB upload
never sits in the job hash, in arq's payload, in an event or in the DLQ entry, and two jobs
with the same image share one key. Each submission that uses an image sets it again with a
fresh TTL (``jobs.keep_finished_s`` plus arq's one-day queue expiry), so the bytes outlive
every job that may still run with them. Kept on the queue's Redis (``noeviction``): a job
must not lose its input to the cache's LRU.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from backend.store import keys

QUEUE_EXPIRY_S = 24 * 3600  # arq's job expiry (queue.producer.ARQ_EXPIRES_MS)


class InputStore:
    def __init__(self, redis: aioredis.Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s

    async def put(self, images: dict[str, bytes]) -> None:
        """Store ``sha256 -> png`` for ``ttl_s``, in one round trip."""
        if not images:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for sha256, png in images.items():
                pipe.set(keys.input_image(sha256), png, ex=self.ttl_s)
            await pipe.execute()

    async def get(self, digests: list[str]) -> dict[str, bytes]:
        """``sha256 -> png`` of the digests still stored (missing ones are left out)."""
        if not digests:
            return {}
        found = await self._redis.mget([keys.input_image(d) for d in digests])
        return {d: png for d, png in zip(digests, found, strict=True) if png is not None}
