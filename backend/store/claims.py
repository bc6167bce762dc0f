"""A worker's claim on a job arq's poll found due, in one round trip (``claimJob``)."""

from __future__ import annotations

import time

from arq.constants import in_progress_key_prefix

from backend.store.scripts import Scripts


async def claim_job(scripts: Scripts, queue_name: str, job_id: str, *, lock_ms: int) -> int | None:
    """The job's queue score once this worker holds arq's in-progress lock on it; None when
    it runs elsewhere, has left the queue or is not due yet."""
    score = await scripts.run(
        "claimJob",
        [in_progress_key_prefix + job_id, queue_name],
        [job_id, int(time.time() * 1000), lock_ms],
    )
    return None if score is None else int(float(score))
