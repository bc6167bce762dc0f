"""Job records in Redis: admit, read, start an attempt, progress, requeue, finish.

Every change of state goes through one Lua script, which also appends the job's event to
its stream and publishes it, so what SSE replays always matches what polling reads.

Every write is guarded (``lua/include/guard.lua``), as BullMQ guards its writes with a lock
token:
- a runner writes with its attempt's **fence**, a token taken by ``start_attempt``; a
  cancel, a takeover after a lost lease, a requeue or a final state changes or clears it,
  so a stale runner's late write does nothing and tells the runner to abandon the job;
- a writer that built its change from a read (a cancel, the reconciler, a new attempt)
  passes the record's **rev** as it read it: a compare-and-set, refused if anything wrote
  the job since (every write bumps ``rev``), and then it reads again.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
import structlog
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.exceptions import RedisError, ResponseError

from backend import metrics
from backend.errors import Unavailable
from backend.models import JobRecord
from backend.options import WebhookView
from backend.store import keys
from backend.store.durable import Durability
from backend.store.flights import Flights
from backend.store.quotas import QUOTA_KEEP_S, quota_key
from backend.store.scripts import ScriptCall, Scripts
from backend.store.writes import (
    EVENTS_MAXLEN,
    Admission,
    AdmitCode,
    Announcement,
    DeadLetter,
    Guard,
    PlaceRules,
    Requeued,
    Written,
)
from backend.store.writes import compact_json as _json

# Re-exported: callers import the write values with the store.
__all__ = ["Admission", "AdmitCode", "Announcement", "DeadLetter", "Guard", "JobStore",
           "PlaceRules", "Requeued", "Written"]  # fmt: skip

log = structlog.get_logger(__name__)

ANNOUNCE_SLICE = 100  # queue entries per announcePositions call: at most ~2 ms of Redis each


def now_ms() -> int:
    return int(time.time() * 1000)


def record_from(fields: dict[bytes, bytes]) -> JobRecord | None:
    """A job record from its hash's fields as Redis returns them (None when empty)."""
    if not fields:
        return None
    return JobRecord.from_fields({_text(k): _text(v) for k, v in fields.items()})


class JobStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        scripts: Scripts,
        *,
        queue_name: str,
        durability: Durability | None = None,
        aging_ms: int = 300_000,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self.queue_name = queue_name
        self.aging_ms = aging_ms  # a priority level's offset in arq's queue (include/priority)
        # With replicas, an admit and a finish wait for one (``store.durable``).
        self._durability = durability
        self.flights = Flights(redis, scripts)

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def run_durable(self, name: str, keys: list[str], args: list[Any]) -> tuple[Any, bool]:
        """Run a script; with replicas, also whether one acknowledged it in time."""
        if self._durability is None:
            return await self._scripts.run(name, keys, args), True
        outcome = await self._durability.run(name, keys, args)
        return outcome.result, outcome.durable

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
        keep_s: int = 24 * 3600,
        daily_quota: int = 0,
        count_cache_miss: bool = False,
    ) -> Admission:
        """Dedup, quota, caps, enqueue and the new job's place in one atomic step
        (``admitJob``).

        ``slots`` and ``median_duration_s`` are the inputs of its estimated wait;
        ``daily_quota`` the user's generations a UTC day (0: not charged);
        ``count_cache_miss``: the submission missed the cache, counted in the same step. Raises
        ``Unavailable`` when the primary has replicas and none acknowledged the new job in
        time: the job may exist, and a retry within the dedup window returns it.
        """
        job_id, user = record.job_id, record.user
        (code, found_id, inflight, *place), durable = await self.run_durable(
            "admitJob",
            [
                keys.dedup(user, record.cache_key), keys.INFLIGHT, keys.user_inflight(user),
                keys.job(job_id), job_key_prefix + job_id, self.queue_name,
                keys.user_jobs(user), keys.events(job_id), keys.DLQ, keys.dlq_entry(job_id),
                keys.INFLIGHT_USERS, keys.ACTIVE, quota_key(user, record.created_at),
            ],
            [
                job_id, int(record.created_at * 1000), dedup_window_ms, per_user, capacity,
                arq_payload, arq_expires_ms, _json(record.to_fields()),
                record.view().model_dump_json(), EVENTS_MAXLEN, keys.EVENTS_CHANNEL, user,
                "1" if from_dlq else "0", slots, median_duration_s, keep_s, daily_quota,
                QUOTA_KEEP_S, keys.WAKE_CHANNEL, self.aging_ms,
                keys.STATS if count_cache_miss else "",
            ],
        )  # fmt: skip
        admission = Admission(AdmitCode(int(code)), _text(found_id), int(inflight))
        if admission.code is AdmitCode.ADMITTED and not durable:
            log.warning("job_admit_not_replicated", job_id=job_id)
            raise Unavailable("the job was not yet replicated; retry (the same job is returned)")
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
                    rules.min_move_ratio, rules.max_events - announced, now_ms(),
                ],
            )  # fmt: skip
            announced += int(sent)
            if int(walked) < slice_size or announced >= rules.max_events:
                break
        return Announcement(int(waiting), announced)

    async def queue_length(self) -> int:
        """Entries in arq's queue: the jobs waiting, and those running (they stay until done)."""
        return int(await self._redis.zcard(self.queue_name))

    async def recent_duplicate(self, user: str, cache_key: str) -> str | None:
        """The job this user submitted with this key within the dedup window, if any."""
        found = await self._redis.get(keys.dedup(user, cache_key))
        return None if found is None else _text(found)

    async def get(self, job_id: str) -> JobRecord | None:
        return record_from(await self._redis.hgetall(keys.job(job_id)))  # type: ignore[misc]

    async def start_attempt(
        self,
        read: JobRecord,
        started: JobRecord,
        *,
        token: str,
        worker_id: str,
        lease_ms: int,
        max_calls: int = 0,
    ) -> tuple[Written, int | str]:
        """``begin_attempt`` without the flight lock."""
        written, value, _ = await self.begin_attempt(
            read, started, None, token=token, worker_id=worker_id, lease_ms=lease_ms,
            max_calls=max_calls,
        )  # fmt: skip
        return written, value

    async def begin_attempt(
        self,
        read: JobRecord,
        started: JobRecord,
        submitted: JobRecord | None,
        *,
        token: str,
        worker_id: str,
        lease_ms: int,
        max_calls: int = 0,
    ) -> tuple[Written, int | str, bool]:
        """Begin an attempt (``startAttempt``): the fence, the lease, the ``started`` event,
        and one of the ``max_calls`` PixelLab call permits (0: take none) in the same step;
        with ``submitted`` (``started`` at stage 10), also the single-flight lock of the
        job's cache key when it is free, with stage 10 written.

        ``started`` is ``read`` with the attempt's fields; the write is a compare-and-set on
        ``read.rev``. Returns ``(APPLIED, new rev, whether the flight lock was taken)``,
        ``(FINAL, status, False)`` for a job no longer runnable, ``(STALE, status, False)``
        when the record changed since ``read``, or ``(NO_PERMIT | PAUSED, permits held,
        False)`` with nothing written; with replicas, ``(UNREPLICATED, new rev, taken)``
        when none acknowledged the start in time (the attempt holds the fence, a permit and
        perhaps the lock, but must not call PixelLab: it puts the job back).
        """
        job_id = read.job_id
        flight_fields = (
            "{}" if submitted is None else _json(submitted.to_fields("stage", "progress"))
        )
        (code, value, *taken), durable = await self.run_durable(
            "startAttempt",
            [keys.job(job_id), keys.events(job_id), keys.ACTIVE, in_progress_key_prefix + job_id,
             keys.PERMITS, keys.UPSTREAM, retry_key_prefix + job_id, keys.flight(read.cache_key)],
            [
                Guard.rev(read.rev), token, worker_id, now_ms(), lease_ms,
                _json(started.to_fields("status", "stage", "progress", "attempts", "history",
                                        "started_at", "stalls")),
                started.view().model_dump_json(), EVENTS_MAXLEN, keys.EVENTS_CHANNEL, job_id,
                max_calls, "" if submitted is None else "1", flight_fields,
                "" if submitted is None else submitted.view().model_dump_json(),
            ],
        )  # fmt: skip
        written = Written(int(code))
        flight = bool(taken and int(taken[0]))
        if written in (Written.NO_PERMIT, Written.PAUSED):
            return written, int(value), False
        if written is not Written.APPLIED:
            return written, _text(value), False
        if not durable:
            # Lost in a failover, this start would let a second attempt call PixelLab too.
            log.warning("job_start_not_replicated", job_id=job_id)
            return Written.UNREPLICATED, int(value), flight
        return written, int(value), flight

    async def progress(self, record: JobRecord, *fields: str, token: str) -> bool:
        """A running attempt's new stage; False when fenced out (abandon the job)."""
        call = self.progress_call(record, *fields, token=token)
        return bool(await self._scripts.run(call.name, call.keys, call.args))

    def progress_call(self, record: JobRecord, *fields: str, token: str) -> ScriptCall:
        """``progress`` as a call to run with others (``Scripts.run_many``); its result is
        the new rev, 0 when fenced out."""
        return ScriptCall(
            "progressJob",
            [keys.job(record.job_id), keys.events(record.job_id)],
            [
                Guard.fence(token), _json(record.to_fields(*fields)),
                record.view().model_dump_json(), EVENTS_MAXLEN, keys.EVENTS_CHANNEL,
                record.job_id,
            ],
        )  # fmt: skip

    async def requeue(
        self,
        record: JobRecord,
        *fields: str,
        token: str,
        defer_s: float,
        slots: int,
        median_duration_s: float,
    ) -> Requeued | None:
        """Back to the queue, to start no sooner than ``defer_s`` from now (``requeueJob``);
        None when fenced out."""
        job_id, now = record.job_id, now_ms()
        code, *place = await self._scripts.run(
            "requeueJob",
            [keys.job(job_id), keys.events(job_id), keys.ACTIVE, in_progress_key_prefix + job_id,
             self.queue_name],
            [
                Guard.fence(token), now, now + int(defer_s * 1000),
                _json(record.to_fields(*fields)), record.view().model_dump_json(),
                EVENTS_MAXLEN, keys.EVENTS_CHANNEL, job_id, slots, median_duration_s,
                keys.WAKE_CHANNEL, self.aging_ms,
            ],
        )  # fmt: skip
        if not int(code):
            return None
        return Requeued(int(place[0]), float(place[1]))

    async def finish(
        self,
        record: JobRecord,
        *,
        guard: Guard,
        keep_s: int,
        duration_s: float | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> tuple[Written, str]:
        """Final state, slot released, out of arq's queue, final event (``finishJob``); a
        dead letter beyond the cap drops the oldest (``spritequeue_dlq_dropped_total``), a
        cancel before the call refunds the daily quota.

        Returns ``(APPLIED, "")``, ``(FINAL, status)`` if it was already final or gone, or
        ``(STALE, status)`` if ``guard`` no longer holds. With replicas, a completion not
        acknowledged by one in time is logged and kept: its image is cached, so a rerun
        after a failover costs no PixelLab call.
        """
        return await self.run_finish(
            self.finish_call(
                record, guard=guard, keep_s=keep_s, duration_s=duration_s, dead_letter=dead_letter
            )
        )

    async def run_finish(self, call: ScriptCall) -> tuple[Written, str]:
        """Run a ``finish_call`` alone (as ``finish`` does)."""
        result, durable = await self.run_durable(call.name, call.keys, call.args)
        if not durable and int(result[0]) == Written.APPLIED:
            log.warning("job_finish_not_replicated", job_id=call.args[1])
        return self.finished(result)

    def finish_call(
        self,
        record: JobRecord,
        *,
        guard: Guard,
        keep_s: int,
        duration_s: float | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> ScriptCall:
        """``finish`` as a call to run with others (``run_together``); read its result with
        ``finished``."""
        job_id, hook = record.job_id, bool(record.callback_url)
        if hook:  # its delivery is due in the same step (``queue.webhooks`` delivers it)
            record = record.model_copy(update={"webhook": WebhookView()})
        return ScriptCall(
            "finishJob",
            [
                keys.job(job_id), keys.events(job_id), keys.INFLIGHT, keys.ACTIVE,
                keys.user_inflight(record.user), keys.DURATIONS, keys.DLQ,
                keys.dlq_entry(job_id), keys.INFLIGHT_USERS,
                keys.dedup(record.user, record.cache_key), job_key_prefix + job_id,
                in_progress_key_prefix + job_id, retry_key_prefix + job_id, self.queue_name,
                abort_jobs_ss, quota_key(record.user, record.created_at), keys.STATS,
                keys.WEBHOOKS,
            ],
            [
                guard, job_id, now_ms(),
                _json(record.to_fields("status", "stage", "progress", "finished_at", "error",
                                       "result", "attempts", "failures", "history", "cached",
                                       *(("webhook",) if hook else ()))),
                record.status.value, record.view().model_dump_json(), EVENTS_MAXLEN,
                keys.EVENTS_CHANNEL, keep_s, "" if duration_s is None else f"{duration_s:.3f}",
                "" if dead_letter is None else _json(dead_letter.entry),
                0 if dead_letter is None else dead_letter.retention_s,
                0 if dead_letter is None else dead_letter.max_entries, keys.dlq_entry(""),
                "1" if hook else "", keys.WAKE_CHANNEL,
            ],
        )  # fmt: skip

    @staticmethod
    def finished(result: list[Any]) -> tuple[Written, str]:
        """What ``finishJob`` answered, as ``finish`` returns it."""
        code, *status = result
        if len(status) > 1 and int(status[1]):
            metrics.DLQ_DROPPED.inc(int(status[1]))
        return Written(int(code)), _text(status[0]) if status else ""

    async def drop_stale(self, job_id: str) -> bool:
        """Take arq's entries for a job that cannot run out of arq's queue (``dropStale``)."""
        arq_keys = [job_key_prefix, in_progress_key_prefix, retry_key_prefix]
        dropped = await self._scripts.run(
            "dropStale",
            [keys.job(job_id), *(prefix + job_id for prefix in arq_keys), self.queue_name],
            [job_id],
        )
        return bool(dropped)

    async def renew_leases(
        self, attempts: dict[str, tuple[str, str, bool]], *, lease_ms: int
    ) -> list[str]:
        """Renew each attempt's lease, flight lock and call permit (``job id -> (token,
        flight key or "", holds a permit)``); returns the job ids whose attempt lost its
        fence."""
        if not attempts:
            return []
        args: list[Any] = [lease_ms, keys.job(""), in_progress_key_prefix, keys.PERMITS, now_ms()]
        for job_id, (token, flight, permit) in attempts.items():
            args += [job_id, token, flight, "1" if permit else ""]
        lost = await self._scripts.run("renewLeases", [], args)
        return [_text(job_id) for job_id in lost]

    async def run_together(self, calls: list[ScriptCall], *, durable: bool = False) -> list[Any]:
        """Several writes in one round trip (see ``Scripts.run_many``); ``durable``: with
        replicas, a ``WAIT`` for them in the same round trip (a lag is logged, as ``finish``
        does)."""
        if not durable or self._durability is None:
            return await self._scripts.run_many(calls)
        results, acked = await self._durability.run_many(calls)
        if not acked:
            log.warning("writes_not_replicated", scripts=[call.name for call in calls])
        return results

    async def reachable(self) -> bool:
        """Whether this Redis answers a PING now."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def pause_takeovers(self, *, for_ms: int) -> None:
        """No attempt is taken over for ``for_ms`` (see ``keys.TAKEOVER_PAUSE``)."""
        await self._redis.set(keys.TAKEOVER_PAUSE, "1", px=for_ms)

    async def takeovers_paused(self, *, lease_ms: int) -> bool:
        """Whether a lapsed lease may not be taken over yet, because its attempt may still be
        alive and about to renew it: a worker back from a Redis outage paused takeovers
        (``pause_takeovers``), or Redis itself started less than a lease ago. The second
        covers a restart that no worker noticed before it took a job: one started after
        it, or one that did not ask Redis during the outage."""
        if await self._redis.exists(keys.TAKEOVER_PAUSE):
            return True
        try:
            server = await self._redis.info("server")
        except ResponseError:  # a managed Redis may refuse INFO: the pause key alone
            return False
        uptime_s = server.get("uptime_in_seconds")
        return uptime_s is not None and float(uptime_s) * 1000 < lease_ms

    async def worker_alive(self, worker_id: str) -> bool:
        """Whether a worker still sends heartbeats (its key expires a few beats after)."""
        return bool(worker_id) and bool(await self._redis.exists(keys.worker(worker_id)))

    async def user_job_ids(self, user: str, limit: int = 50) -> list[str]:
        ids = await self._redis.zrevrange(keys.user_jobs(user), 0, limit - 1)
        return [_text(i) for i in ids]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
