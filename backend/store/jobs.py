"""Job records in Redis: admit, read, move through states, finish, cancel.

Every change of state goes through one Lua script, which also appends the job's event to
its stream and publishes it, so what SSE replays always matches what polling reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

import redis.asyncio as aioredis
from arq.constants import abort_jobs_ss, job_key_prefix

from backend.models import JobRecord, JobStatus
from backend.store import keys
from backend.store.scripts import Scripts

EVENTS_MAXLEN = 100
ANNOUNCE_SLICE = 100  # queue entries per announcePositions call: at most ~2 ms of Redis each


class AdmitCode(IntEnum):
    ADMITTED = 1
    DEDUPLICATED = 2
    QUEUE_FULL = -1
    USER_LIMIT = -2
    NOT_FOUND = -4


class CancelCode(IntEnum):
    CANCELLED_QUEUED = 1
    ABORT_REQUESTED = 2
    ALREADY_FINISHED = -3
    NOT_FOUND = -4


@dataclass(frozen=True)
class Admission:
    code: AdmitCode
    job_id: str
    inflight: int
    position: int | None = None  # the new job's place, when admitted
    estimated_wait_s: float | None = None


@dataclass(frozen=True)
class PlaceRules:
    """When a waiting job's new place is worth an event (``announcePositions-2.lua``)."""

    min_wait_change_s: float  # a wait must move by both of these ...
    min_wait_change_ratio: float  # ... (a fraction of the announced wait)
    every_move_up_to: int  # every move within these first places is announced
    min_move_ratio: float  # further back, a move of this fraction of the announced place
    max_events: int  # per walk, spent from the head of the queue


@dataclass(frozen=True)
class Announcement:
    waiting: int  # jobs queued, walked in order
    announced: int  # of them, how many got a new place event


@dataclass(frozen=True)
class DeadLetter:
    entry: dict[str, Any]
    retention_s: int


def now_ms() -> int:
    return int(time.time() * 1000)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class JobStore:
    def __init__(self, redis: aioredis.Redis, scripts: Scripts, *, queue_name: str) -> None:
        self._redis = redis
        self._scripts = scripts
        self.queue_name = queue_name

    async def admit(
        self,
        record: JobRecord,
        *,
        arq_payload: bytes,
        arq_expires_ms: int,
        dedup_window_ms: int,
        per_user: int,
        capacity: int,
        slots: int,
        median_duration_s: float,
        from_dlq: bool = False,
    ) -> Admission:
        """Dedup, caps, enqueue and the new job's place in one atomic step (``admitJob``).

        ``slots`` and ``median_duration_s`` are the inputs of its estimated wait.
        """
        job_id, user = record.job_id, record.user
        code, found_id, inflight, *place = await self._scripts.run(
            "admitJob",
            [
                keys.dedup(user, record.cache_key), keys.INFLIGHT, keys.user_inflight(user),
                keys.job(job_id), job_key_prefix + job_id, self.queue_name,
                keys.user_jobs(user), keys.events(job_id), keys.DLQ, keys.dlq_entry(job_id),
                keys.INFLIGHT_USERS, keys.ACTIVE,
            ],
            [
                job_id, int(record.created_at * 1000), dedup_window_ms, per_user, capacity,
                arq_payload, arq_expires_ms, _json(record.to_fields()),
                record.view().model_dump_json(), EVENTS_MAXLEN, keys.EVENTS_CHANNEL, user,
                "1" if from_dlq else "0", slots, median_duration_s,
            ],
        )  # fmt: skip
        admission = Admission(AdmitCode(int(code)), _text(found_id), int(inflight))
        if place:
            position, wait = place
            return replace(admission, position=int(position), estimated_wait_s=float(wait))
        return admission

    async def announce_positions(
        self,
        *,
        slots: int,
        median_duration_s: float,
        limit: int,
        rules: PlaceRules,
        slice_size: int = ANNOUNCE_SLICE,
    ) -> Announcement:
        """Refresh the places of the first ``limit`` queue entries; push the changed ones.

        ``announcePositions`` walks the queue a slice per call, so Redis serves other clients
        between slices; a slice boundary is where a concurrent change can make two places
        briefly disagree, until the next walk.
        """
        waiting = announced = 0
        for first in range(0, limit, slice_size):
            waiting, sent, walked = await self._scripts.run(
                "announcePositions",
                [self.queue_name, keys.ACTIVE],
                [
                    slots, median_duration_s, first, min(slice_size, limit - first), waiting,
                    rules.min_wait_change_s, rules.min_wait_change_ratio, EVENTS_MAXLEN,
                    keys.EVENTS_CHANNEL, keys.job(""), keys.events(""), rules.every_move_up_to,
                    rules.min_move_ratio, rules.max_events - announced,
                ],
            )  # fmt: skip
            announced += int(sent)
            if int(walked) < slice_size or announced >= rules.max_events:
                break
        return Announcement(int(waiting), announced)

    async def recent_duplicate(self, user: str, cache_key: str) -> str | None:
        """The job this user submitted with this key within the dedup window, if any."""
        found = await self._redis.get(keys.dedup(user, cache_key))
        return None if found is None else _text(found)

    async def get(self, job_id: str) -> JobRecord | None:
        fields = await self._redis.hgetall(keys.job(job_id))  # type: ignore[misc]
        if not fields:
            return None
        return JobRecord.from_fields({_text(k): _text(v) for k, v in fields.items()})

    async def transition(
        self,
        record: JobRecord,
        *fields: str,
        allowed_from: tuple[JobStatus, ...],
        active: str = "keep",
    ) -> bool:
        """Store the named fields of ``record`` if the job is in ``allowed_from``; emit progress."""
        applied = await self._scripts.run(
            "transitionJob",
            [keys.job(record.job_id), keys.events(record.job_id), keys.ACTIVE],
            [
                record.job_id, ",".join(allowed_from), active, now_ms(),
                _json(record.to_fields(*fields)), "progress", record.view().model_dump_json(),
                EVENTS_MAXLEN, keys.EVENTS_CHANNEL,
            ],
        )  # fmt: skip
        return bool(applied)

    async def finish(
        self,
        record: JobRecord,
        *,
        keep_s: int,
        duration_s: float | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> bool:
        """Final state, slot released, final event; False if it was already finished."""
        job_id = record.job_id
        applied = await self._scripts.run(
            "finishJob",
            [
                keys.job(job_id), keys.events(job_id), keys.INFLIGHT, keys.ACTIVE,
                keys.user_inflight(record.user), keys.DURATIONS, keys.DLQ,
                keys.dlq_entry(job_id), keys.INFLIGHT_USERS,
            ],
            [
                job_id, now_ms(),
                _json(record.to_fields("status", "stage", "progress", "finished_at", "error",
                                       "result", "attempts", "history", "cached")),
                record.status.value, record.view().model_dump_json(), EVENTS_MAXLEN,
                keys.EVENTS_CHANNEL, keep_s, "" if duration_s is None else f"{duration_s:.3f}",
                "" if dead_letter is None else _json(dead_letter.entry),
                0 if dead_letter is None else dead_letter.retention_s,
            ],
        )  # fmt: skip
        return bool(applied)

    async def record_finished(self, record: JobRecord, *, keep_s: int) -> None:
        """Store a job that never queued (a cache hit) with its final event, in one MULTI."""
        job_id = record.job_id
        data = record.view().model_dump_json()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.job(job_id), mapping=record.to_fields())
            pipe.expire(keys.job(job_id), keep_s)
            pipe.zadd(keys.user_jobs(record.user), {job_id: int(record.created_at * 1000)})
            pipe.zremrangebyrank(keys.user_jobs(record.user), 0, -101)
            pipe.xadd(
                keys.events(job_id),
                {"event": record.status.value, "data": data},
                maxlen=EVENTS_MAXLEN,
                approximate=True,
            )
            pipe.expire(keys.events(job_id), keep_s)
            if record.cached:
                pipe.hincrby(keys.STATS, "cache_hits", 1)
            await pipe.execute()

    async def count_cache_miss(self) -> None:
        """Submission-level misses, exact across API processes (hits: ``record_finished``)."""
        await self._redis.hincrby(keys.STATS, "cache_misses", 1)  # type: ignore[misc]

    async def request_cancel(self, job_id: str) -> tuple[CancelCode, str]:
        """Take a queued job off arq's queue, or ask arq to abort a running one."""
        code, status = await self._scripts.run(
            "cancelJob",
            [keys.job(job_id), self.queue_name, abort_jobs_ss, job_key_prefix + job_id],
            [job_id, now_ms()],
        )
        return CancelCode(int(code)), _text(status)

    async def release_lock(self, key: str, *, owner: str) -> bool:
        """Delete ``key`` if ``owner`` still holds it (``releaseLock-1.lua``)."""
        return bool(await self._scripts.run("releaseLock", [key], [owner]))

    async def user_job_ids(self, user: str, limit: int = 50) -> list[str]:
        ids = await self._redis.zrevrange(keys.user_jobs(user), 0, limit - 1)
        return [_text(i) for i in ids]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
