"""The arq task. Thin on purpose: the job's life is in ``runner.JobRunner``."""

from __future__ import annotations

from typing import Any

from backend.queue.runner import JobRunner


async def generate_sprite(ctx: dict[str, Any], job_id: str) -> None:
    runner: JobRunner = ctx["runner"]
    await runner.run(job_id)
