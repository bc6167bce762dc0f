"""A worker's claim on a job arq's poll found due, in one round trip (``claimJob``): arq's
lock, arq's payload and count of runs, an abort asked for before the start, and our record
of the job, read together for the run and the attempt about to start."""

from __future__ import annotations

import time
from dataclasses import dataclass

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix

from backend.models import JobRecord
from backend.store import keys
from backend.store.jobs import record_from
from backend.store.scripts import Scripts

# How long arq keeps its count of a job's runs (arq's own figure, in its run_job).
ARQ_RETRY_KEEP_S = 88_400


@dataclass(frozen=True)
class Claim:
    score: int  # the job's score in arq's queue
    payload: bytes | None  # arq's payload of the job (None: expired)
    tries: int  # arq's count of its runs of the job, this one included
    aborted: bool  # an abort was asked for before the start
    record: JobRecord | None  # as read just after the claim (None: no record)


async def claim_job(
    scripts: Scripts, queue_name: str, job_id: str, *, lock_ms: int
) -> Claim | None:
    """The claim once this worker holds arq's in-progress lock on the job; None when it runs
    elsewhere, has left the queue or is not due yet. The record read with it may be stale
    by the time the attempt starts: the start is a compare-and-set on its revision."""
    claimed, fields = await scripts.run_and_read(
        "claimJob",
        [in_progress_key_prefix + job_id, queue_name, job_key_prefix + job_id,
         retry_key_prefix + job_id, abort_jobs_ss],
        [job_id, int(time.time() * 1000), lock_ms, ARQ_RETRY_KEEP_S],
        hash_key=keys.job(job_id),
    )  # fmt: skip
    if not claimed:
        return None
    score, payload, tries, aborted = claimed
    return Claim(int(float(score)), payload, int(tries), bool(aborted), record_from(fields))
