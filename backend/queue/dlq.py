"""The dead-letter queue: list (newest first), read, requeue, delete.

Entries are written by ``finishJob-9.lua`` with a TTL (the retention); the index ``sq:dlq``
is pruned by score on every write and of any entry found expired on read, so nothing here
ever scans the keyspace.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from backend.errors import NotFound
from backend.models import JobRecord, JobStatus, Stage
from backend.queue.producer import Producer, Submission
from backend.store import keys


class DeadLetters:
    def __init__(self, redis: aioredis.Redis, producer: Producer) -> None:
        self._redis = redis
        self._producer = producer

    async def count(self) -> int:
        return int(await self._redis.zcard(keys.DLQ))

    async def list(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of entries, newest first; the cursor is the last entry's score (exclusive)."""
        top = f"({cursor}" if cursor else "+inf"
        rows = await self._redis.zrevrangebyscore(
            keys.DLQ, top, "-inf", start=0, num=limit, withscores=True
        )
        if not rows:
            return [], None
        raw = await self._redis.mget([keys.dlq_entry(job_id.decode()) for job_id, _ in rows])
        items: list[dict[str, Any]] = []
        expired: list[bytes] = []
        for (job_id, _), value in zip(rows, raw, strict=True):
            if value is None:
                expired.append(job_id)
            else:
                items.append(json.loads(value))
        if expired:
            await self._redis.zrem(keys.DLQ, *expired)
        next_cursor = str(int(rows[-1][1])) if len(rows) == limit else None
        return items, next_cursor

    async def get(self, job_id: str) -> dict[str, Any]:
        raw = await self._redis.get(keys.dlq_entry(job_id))
        if raw is None:
            raise NotFound("no such dead-letter entry")
        entry: dict[str, Any] = json.loads(raw)
        return entry

    async def retry(self, job_id: str) -> Submission:
        """Requeue under the same id; bypasses the user cap, not the global one."""
        entry = await self.get(job_id)
        record = JobRecord(
            job_id=job_id,
            user=entry["user"],
            cache_key=entry["cache_key"],
            request=entry["request"],
            timeout_s=entry["timeout_s"],
            status=JobStatus.QUEUED,
            stage=Stage.QUEUED,
            progress=0,
            created_at=time.time(),
            request_id=entry.get("request_id"),
        )
        return await self._producer.enqueue(record, from_dlq=True)

    async def delete(self, job_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.dlq_entry(job_id))
            pipe.zrem(keys.DLQ, job_id)
            deleted, _ = await pipe.execute()
        if not deleted:
            raise NotFound("no such dead-letter entry")
