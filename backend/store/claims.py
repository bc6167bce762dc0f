"""A worker's claim on a job arq's poll found due, in one round trip (``claimJob``), with
the job's record read in the same round trip for the attempt that will start it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from arq.constants import in_progress_key_prefix

from backend.models import JobRecord
from backend.store import keys
from backend.store.jobs import record_from
from backend.store.scripts import Scripts


@dataclass(frozen=True)
class Claim:
    score: int  # the job's score in arq's queue
    record: JobRecord | None  # as read just after the claim (None: no record)


async def claim_job(
    scripts: Scripts, queue_name: str, job_id: str, *, lock_ms: int
) -> Claim | None:
    """The claim once this worker holds arq's in-progress lock on the job; None when it runs
    elsewhere, has left the queue or is not due yet. The record read with it may be stale
    by the time the attempt starts: the start is a compare-and-set on its revision."""
    score, fields = await scripts.run_and_read(
        "claimJob",
        [in_progress_key_prefix + job_id, queue_name],
        [job_id, int(time.time() * 1000), lock_ms],
        hash_key=keys.job(job_id),
    )
    if score is None:
        return None
    return Claim(int(float(score)), record_from(fields))
