"""Webhook deliveries in Redis: ``sq:webhooks`` (job id -> when its delivery is due, ms).

``finishJob`` (or a cache hit's ``record_finished``) adds a job with a ``callback_url`` in
the step that makes it final; workers claim due entries for a lease (``claimWebhooks``) and
record each attempt's outcome in the job's ``webhook`` field (``recordDelivery``). The set
is in Redis, so a delivery outlives any worker.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from backend.options import WebhookView
from backend.store import keys
from backend.store.scripts import Scripts


class WebhookStore:
    def __init__(self, redis: aioredis.Redis, scripts: Scripts) -> None:
        self._redis = redis
        self._scripts = scripts

    async def claim(self, *, lease_ms: int, limit: int) -> tuple[list[str], float | None]:
        """The due deliveries, now this worker's for ``lease_ms``; and when the next one is
        due (unix seconds), if any."""
        next_due, *ids = await self._scripts.run(
            "claimWebhooks", [keys.WEBHOOKS], [int(time.time() * 1000), lease_ms, limit]
        )
        due = float(next_due) / 1000 if next_due not in (b"", "") else None
        return [i.decode() if isinstance(i, bytes) else i for i in ids], due

    async def record(
        self, job_id: str, state: WebhookView, *, finished_at: str, due_at: float | None
    ) -> int:
        """Store an attempt's outcome: due again at ``due_at`` (unix s), or done (None).
        ``finished_at`` is the record's field as read: a job that ended again since is left
        to its own delivery. Returns 1 written, 0 dropped (not final), -1 superseded."""
        due = "" if due_at is None else int(due_at * 1000)
        return int(
            await self._scripts.run(
                "recordDelivery",
                [keys.WEBHOOKS, keys.job(job_id)],
                [job_id, state.model_dump_json(), due, finished_at],
            )
        )

    async def drop(self, job_id: str) -> None:
        await self._redis.zrem(keys.WEBHOOKS, job_id)
