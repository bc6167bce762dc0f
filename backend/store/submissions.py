"""Writes of the submit path besides a single admission: a cache hit's finished job, and a
submission's variants admitted as one group (``admitGroup``). (A cache miss is counted by
the admission itself, ``admitJob``.)

A group is all or nothing: its jobs are admitted against the caps together, in one script,
and recorded as ``sq:group:{id}`` (the user, the job ids in seed order), kept as long as its
jobs can be.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import structlog
from arq.constants import job_key_prefix

from backend.errors import Unavailable
from backend.models import JobRecord
from backend.store import keys
from backend.store.jobs import AdmitCode, JobStore
from backend.store.quotas import QUOTA_KEEP_S, quota_key
from backend.store.scripts import Scripts
from backend.store.writes import EVENTS_MAXLEN, compact_json

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class GroupAdmission:
    code: AdmitCode
    inflight: int
    places: list[tuple[int, float]]  # each job's position and estimated wait, in order


@dataclass(frozen=True)
class Group:
    group_id: str
    user: str
    job_ids: list[str]
    created_at: float


class SubmitStore:
    """Beside ``JobStore``, whose Redis, queue, priority aging and durable runs it shares."""

    def __init__(self, jobs: JobStore, scripts: Scripts) -> None:
        self._jobs = jobs
        self._redis = jobs.redis
        self._scripts = scripts

    async def admit_group(
        self,
        group_id: str,
        records: list[JobRecord],
        payloads: list[bytes],
        *,
        arq_expires_ms: int,
        per_user: int,
        capacity: int,
        slots: int,
        median_duration_s: float,
        keep_s: int,
        daily_quota: int = 0,
    ) -> GroupAdmission:
        """Admit every record or none (``admitGroup``); the group is kept ``keep_s`` after
        the longest its jobs can wait. Raises ``Unavailable`` when the primary has replicas
        and none acknowledged the group in time (it may exist)."""
        first = records[0]
        user = first.user
        group = {"user": user, "jobs": [r.job_id for r in records], "created_at": first.created_at}
        args: list[object] = [
            int(first.created_at * 1000), per_user, capacity, arq_expires_ms, EVENTS_MAXLEN,
            keys.EVENTS_CHANNEL, user, slots, median_duration_s, keep_s, daily_quota,
            QUOTA_KEEP_S, keys.WAKE_CHANNEL, self._jobs.aging_ms, compact_json(group),
            keep_s + arq_expires_ms // 1000, keys.job(""), job_key_prefix, keys.events(""),
            len(records),
        ]  # fmt: skip
        for record, payload in zip(records, payloads, strict=True):
            args += [record.job_id, payload, compact_json(record.to_fields()),
                     record.view().model_dump_json()]  # fmt: skip
        script_keys = [
            keys.INFLIGHT, keys.user_inflight(user), self._jobs.queue_name, keys.user_jobs(user),
            keys.INFLIGHT_USERS, keys.ACTIVE, quota_key(user, first.created_at),
            keys.group(group_id),
        ]  # fmt: skip
        reply, durable = await self._jobs.run_durable("admitGroup", script_keys, args)
        code, inflight, *flat = reply
        admission = GroupAdmission(
            AdmitCode(int(code)),
            int(inflight),
            [(int(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)],
        )
        if admission.code is AdmitCode.ADMITTED and not durable:
            log.warning("group_admit_not_replicated", group_id=group_id)
            raise Unavailable("the jobs were not yet replicated; retry")
        return admission

    async def group(self, group_id: str) -> Group | None:
        raw = await self._redis.get(keys.group(group_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return Group(group_id, data["user"], list(data["jobs"]), float(data["created_at"]))

    async def record_finished(self, record: JobRecord, *, keep_s: int) -> None:
        """Store a job that never queued (a cache hit) with its final event, in one script
        (``recordServed``, the writes a plain request's hit makes in ``resolveSubmit``);
        with a ``callback_url``, its webhook (pending in ``record``) is due in the same step."""
        job_id = record.job_id
        created_ms = int(record.created_at * 1000)
        await self._scripts.run(
            "recordServed",
            [keys.job(job_id), keys.events(job_id), keys.user_jobs(record.user), keys.STATS,
             keys.WEBHOOKS],
            [compact_json(record.to_fields()), record.view().model_dump_json(), job_id,
             created_ms, keep_s, EVENTS_MAXLEN, "1" if record.callback_url else "",
             keys.WAKE_CHANNEL],
        )  # fmt: skip
