"""The hooks ``SpriteWorker`` puts into arq's worker, and what they rely on in arq.

Fenced attempts need arq's own post-run writes to be ours (``backend/queue/arq_worker.py``):
``finish_job`` does nothing and ``finish_failed_job`` drops arq's entries only for a job that
cannot run. These tests fail loudly when an arq upgrade moves what the hooks lean on, and
check the behaviour the hooks exist for against a real Redis and worker.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from importlib import resources

import arq
import httpx
import pytest
import redis.asyncio as aioredis
from arq.constants import job_key_prefix
from arq.worker import Worker

from backend.config import Settings
from backend.queue.arq_worker import SpriteWorker
from backend.store.claims import ARQ_RETRY_KEEP_S
from fixtures.factories import auth, sprite_request, wait_for_status
from tests.conftest import Stack


def test_arq_is_the_version_the_hooks_were_written_for() -> None:
    # A new arq may change run_job's clean-up: read arq/worker.py and these hooks again,
    # then move the pin in pyproject.toml and this line together.
    assert arq.VERSION == "0.28.0"


@pytest.mark.parametrize(
    "name",
    ["finish_job", "finish_failed_job", "_poll_iteration", "start_jobs", "close", "run_job"],
)
def test_each_hook_overrides_a_method_arq_still_has(name: str) -> None:
    ours, theirs = getattr(SpriteWorker, name), getattr(Worker, name)
    assert ours is not theirs
    assert inspect.iscoroutinefunction(theirs)
    if name == "finish_failed_job":
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(theirs).parameters
        )


def test_the_poll_still_reads_the_queue_only_while_jobs_may_be_picked() -> None:
    # _start_named skips one read of the queue with arq's switch; its stop handler turns
    # the same switch off for good, and ours keeps it off.
    source = inspect.getsource(Worker._poll_iteration)
    assert source.index("if self.allow_pick_jobs:") < source.index("self.pool.zrangebyscore(")
    assert "self.allow_pick_jobs = False" in inspect.getsource(
        Worker.handle_sig_wait_for_completion
    )
    assert SpriteWorker.handle_sig_wait_for_completion is not Worker.handle_sig_wait_for_completion


def test_start_jobs_still_claims_and_runs_as_ours_does() -> None:
    # Ours is arq's loop with the claim made one script: the claim's keys and value, the
    # semaphore, the counter and run_job's arguments must still be what arq uses.
    source = inspect.getsource(Worker.start_jobs)
    for step in (
        "in_progress_key_prefix + job_id",
        "pipe.zscore(self.queue_name, job_id)",
        "pipe.psetex(in_progress_key, int(self.in_progress_timeout_s * 1000), b'1')",
        "self.sem.acquire()",
        "self.job_counter = self.job_counter + 1",
        "self.run_job(job_id, int(score))",
        "self._release_sem_dec_counter_on_complete()",
        "self.tasks[job_id] = t",
    ):
        assert step in source, step  # fmt: skip
    assert list(inspect.signature(Worker.run_job).parameters) == ["self", "job_id", "score"]


def test_run_job_still_reads_and_runs_as_ours_does() -> None:
    # Ours starts from the claim (claimJob-5.lua did arq's first round trip) and runs the
    # task as arq does: the same reads, the same context, the task where aborts find it.
    source = inspect.getsource(Worker.run_job)
    for step in (
        "pipe.get(job_key_prefix + job_id)",
        "pipe.incr(retry_key_prefix + job_id)",
        "pipe.expire(retry_key_prefix + job_id, 88400)",
        "pipe.zrem(abort_jobs_ss, job_id)",
        "deserialize_job_raw(",
        "max_tries = self.max_tries if function.max_tries is None else function.max_tries",
        "if job_try > max_tries:",
        "timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s",
        "'job_id': job_id,",
        "'job_try': job_try,",
        "'enqueue_time': ms_to_datetime(enqueue_time_ms),",
        "'score': score,",
        "await self.on_job_start(ctx)",
        "self.job_tasks[job_id] = task = self.loop.create_task(",
        "function.coroutine(ctx, *args, **kwargs)",
        "await asyncio.wait_for(task, timeout_s)",
        "del self.job_tasks[job_id]",
        "elif job_id in self.aborting_tasks and isinstance(e, asyncio.CancelledError):",
        "await self.on_job_end(ctx)",
    ):
        assert step in source, step  # fmt: skip
    assert ARQ_RETRY_KEEP_S == 88400  # arq's own, as above
    lua = (resources.files("backend.store") / "lua" / "claimJob-5.lua").read_text()
    for step in ('"GET", KEYS[3]', '"INCR", KEYS[4]', '"EXPIRE", KEYS[4]', '"ZREM", KEYS[5]'):
        assert step in lua, step


def test_run_job_still_cleans_up_through_the_hooked_methods() -> None:
    source = inspect.getsource(Worker.run_job)
    assert "self.finish_job(" in source and "self.finish_failed_job(" in source
    # The queue entry and payload are touched nowhere else in run_job.
    assert "zrem(self.queue_name" not in source and "job_key_prefix + job_id)" in source


async def test_a_cancelled_job_leaves_no_queue_entry_for_a_late_write(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    settings = make_settings()
    stack = make_stack(settings)
    alice = tokens["alice"]
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        response = await http.post(
            "/v1/jobs", json=sprite_request("a hooked heron [mock-latency:1500]"),
            headers=auth(alice),
        )  # fmt: skip
        job_id = response.json()["job_id"]
        await wait_for_status(http, job_id, alice, {"active"})
        assert (await http.delete(f"/v1/jobs/{job_id}", headers=auth(alice))).status_code == 202
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # the aborted task ends, arq runs its clean-up
            assert await redis.zscore(settings.queue_name, job_id) is None
            assert await redis.exists(job_key_prefix + job_id) == 0
            await wait_for_status(http, job_id, alice, {"cancelled"})
            await asyncio.sleep(0.05)
