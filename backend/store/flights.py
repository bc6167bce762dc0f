"""The single-flight lock of a cache key (``sq:flight:{key}``): one attempt calls PixelLab
for a key, the others wait for its image or its final outcome (``queue.runner``)."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from backend.errors import FencedOut
from backend.models import JobRecord
from backend.store import keys
from backend.store.scripts import ScriptCall, Scripts
from backend.store.writes import EVENTS_MAXLEN, Guard
from backend.store.writes import compact_json as _json


class Flights:
    def __init__(self, redis: aioredis.Redis, scripts: Scripts) -> None:
        self._redis = redis
        self._scripts = scripts

    async def take(self, submitted: JobRecord, token: str, *, lease_ms: int) -> bool:
        """Take the single-flight lock of the job's cache key for this attempt and, holding
        it, write ``submitted`` (stage 10) in the same step (``takeFlight``). False when
        another attempt holds the lock; raises ``FencedOut`` when this one lost its fence."""
        job_id = submitted.job_id
        rev = await self._scripts.run(
            "takeFlight",
            [keys.flight(submitted.cache_key), keys.job(job_id), keys.events(job_id)],
            [
                token, lease_ms, Guard.fence(token),
                _json(submitted.to_fields("stage", "progress")),
                submitted.view().model_dump_json(), EVENTS_MAXLEN, keys.EVENTS_CHANNEL, job_id,
            ],
        )  # fmt: skip
        if int(rev) < 0:
            raise FencedOut("the attempt lost its fence")
        return int(rev) > 0

    async def state(self, cache_key: str) -> tuple[bool, dict[str, Any] | None]:
        """Whether the flight lock is held, and the outcome its last holder left, if any."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.flight(cache_key))
            pipe.get(keys.flight_outcome(cache_key))
            held, outcome = await pipe.execute()
        return bool(held), None if outcome is None else json.loads(outcome)

    async def release(
        self, cache_key: str, token: str, *, outcome: dict[str, Any] | None, keep_ms: int
    ) -> bool:
        """Let the flight lock go if this attempt holds it, leaving ``outcome`` for waiters."""
        call = self.release_call(cache_key, token, outcome=outcome, keep_ms=keep_ms)
        return bool(await self._scripts.run(call.name, call.keys, call.args))

    def release_call(
        self, cache_key: str, token: str, *, outcome: dict[str, Any] | None, keep_ms: int
    ) -> ScriptCall:
        return ScriptCall(
            "releaseFlight",
            [keys.flight(cache_key), keys.flight_outcome(cache_key)],
            [token, "" if outcome is None else _json(outcome), keep_ms],
        )
