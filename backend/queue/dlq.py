"""The dead-letter queue: list (newest first), read, requeue (one, or by filter), delete.

Entries are written by ``finishJob-18.lua`` with a TTL (the retention), at most
``SPRITEQ_JOBS__DLQ_MAX`` of them (the oldest dropped); the index ``sq:dlq`` is pruned by
score on every write and of any entry found expired on read, so nothing here ever scans the
keyspace: a bulk retry walks the index, which the cap bounds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from backend.errors import NotFound, QueueFull
from backend.models import JobRecord, JobStatus, Stage
from backend.options import Priority
from backend.queue.producer import Producer, Submission
from backend.store import keys

BULK_PAGE = 500  # entries read per MGET while a bulk retry walks the index


@dataclass
class BulkRetry:
    """What a bulk retry did: ``requeued`` jobs (their ids), ``remaining`` matches left in the
    DLQ because the queue filled up."""

    requeued: int = 0
    remaining: int = 0
    job_ids: list[str] = field(default_factory=list)


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
        return await self._requeue(job_id, await self.get(job_id))

    async def _requeue(self, job_id: str, entry: dict[str, Any]) -> Submission:
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
            # An admin's retry runs next: the failure already cost its user a long wait.
            priority=Priority.HIGH,
            callback_url=entry.get("callback_url"),
            group_id=entry.get("group_id"),
        )
        return await self._producer.enqueue(record, from_dlq=True)

    async def retry_matching(
        self, *, error_type: str | None = None, ids: Sequence[str] | None = None
    ) -> BulkRetry:
        """Requeue the entries of one ``error_type``, or the listed ``ids``, oldest first,
        until the global cap is reached; the matches left over are counted, not requeued.

        Each requeue is the single retry's atomic step, so a concurrent admin's retry or
        delete of the same entry makes this one skip it.
        """
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            scores = await self._redis.zmscore(keys.DLQ, wanted)
            found = [(s, i) for i, s in zip(wanted, scores, strict=True) if s is not None]
            order = [job_id for _, job_id in sorted(found)]
        else:
            order = [job_id.decode() for job_id in await self._redis.zrange(keys.DLQ, 0, -1)]
        outcome, full = BulkRetry(), False
        for first in range(0, len(order), BULK_PAGE):
            page = order[first : first + BULK_PAGE]
            raw = await self._redis.mget([keys.dlq_entry(job_id) for job_id in page])
            for job_id, value in zip(page, raw, strict=True):
                if value is None:
                    continue
                entry = json.loads(value)
                if error_type is not None and (entry.get("error") or {}).get("type") != error_type:
                    continue
                if full:
                    outcome.remaining += 1
                    continue
                try:
                    await self._requeue(job_id, entry)
                except NotFound:  # retried or deleted meanwhile
                    continue
                except QueueFull:
                    full = True
                    outcome.remaining += 1
                    continue
                outcome.requeued += 1
                outcome.job_ids.append(job_id)
        return outcome

    async def delete(self, job_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.dlq_entry(job_id))
            pipe.zrem(keys.DLQ, job_id)
            deleted, _ = await pipe.execute()
        if not deleted:
            raise NotFound("no such dead-letter entry")
