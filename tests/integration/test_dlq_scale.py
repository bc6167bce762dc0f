"""The DLQ at scale: the cap drops the oldest entries, bulk retry by error type or by ids.

Entries are made by the real scripts (``admitJob`` then ``finishJob`` with a dead letter),
as a runner makes them, without a worker: what dead-letters which failure is the worker's
business (tests/integration/test_failures.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from backend.config import Settings
from backend.errors import ErrorType
from backend.models import ErrorInfo, JobStatus, SpriteRequest
from backend.queue.producer import Producer
from backend.queue.resources import Resources, open_resources
from backend.store import keys
from backend.store.jobs import DeadLetter, Guard, Written
from fixtures.factories import auth, sprite_request
from fixtures.stack import settings_env
from tests.conftest import Stack


@pytest.fixture
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    opened = await open_resources(settings)
    yield opened
    await opened.close()


async def dead_letter(
    resources: Resources, n: int, error_type: ErrorType, *, user: str = "alice", dlq_max: int
) -> str:
    """Admit a job and dead-letter it, as a runner does; returns its id."""
    producer = Producer(resources)
    request = SpriteRequest.model_validate(sprite_request(f"dead letter {n} {error_type}"))
    record = producer.new_record(user, request, None)
    admitted = await producer.enqueue(record, from_dlq=False)
    assert admitted.created
    read = await resources.jobs.get(record.job_id)
    assert read is not None
    error = ErrorInfo(type=error_type, message="it failed", retryable=False)
    failed = read.finished_as(JobStatus.FAILED, at=time.time(), error=error)
    written, _ = await resources.jobs.finish(
        failed,
        guard=Guard.rev(read.rev),
        keep_s=3600,
        dead_letter=DeadLetter(failed.dead_letter_entry(time.time()), 3600, dlq_max),
    )
    assert written is Written.APPLIED
    return record.job_id


def dropped_metric() -> float:
    return REGISTRY.get_sample_value("spritequeue_dlq_dropped_total") or 0.0


async def test_the_dlq_cap_drops_the_oldest_entries_and_counts_them(
    resources: Resources, redis: aioredis.Redis
) -> None:
    before = dropped_metric()
    ids = [await dead_letter(resources, n, ErrorType.SERVER_ERROR, dlq_max=3) for n in range(5)]
    kept = [job_id.decode() for job_id in await redis.zrange(keys.DLQ, 0, -1)]
    assert kept == ids[2:]
    for gone in ids[:2]:
        assert not await redis.exists(keys.dlq_entry(gone))
    for job_id in ids[2:]:
        assert await redis.exists(keys.dlq_entry(job_id))
    assert await redis.hget(keys.STATS, "dlq_dropped") == b"2"
    assert dropped_metric() - before == 2


async def test_bulk_retry_by_error_type_and_by_ids_up_to_free_capacity(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    redis: aioredis.Redis,
    tokens: dict[str, str],
) -> None:
    settings = make_settings(limits={"queue_capacity": 4, "per_user": 4})
    opened = await open_resources(settings)
    try:
        servers = [await dead_letter(opened, n, ErrorType.SERVER_ERROR, dlq_max=100)
                   for n in range(5)]  # fmt: skip
        others = [await dead_letter(opened, n, ErrorType.INVALID_REQUEST, dlq_max=100)
                  for n in range(2)]  # fmt: skip
    finally:
        await opened.close()
    stack = make_stack(settings, worker=False)  # requeued jobs stay queued: capacity counts
    admin = auth(tokens["admin"])
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for bad in ({}, {"error_type": "server_error", "ids": servers[:1]},
                    {"error_type": "no_such_type"}, {"ids": []}, {"colour": "red"}):  # fmt: skip
            refused = await http.post("/v1/admin/dlq/retry", json=bad, headers=admin)
            assert refused.status_code == 422, bad
            assert refused.json()["error"]["code"] == "invalid_request"
        user = await http.post(
            "/v1/admin/dlq/retry", json={"error_type": "server_error"}, headers=auth(tokens["bob"])
        )
        assert user.status_code == 403

        bulk = await http.post(
            "/v1/admin/dlq/retry", json={"error_type": "server_error"}, headers=admin
        )
        assert bulk.status_code == 202
        # Capacity 4, nothing in flight: the four oldest server errors, oldest first.
        assert bulk.json() == {"requeued": 4, "remaining": 1, "job_ids": servers[:4]}
        for job_id in servers[:4]:
            assert (await redis.hget(keys.job(job_id), "status")) == b"queued"
            assert not await redis.exists(keys.dlq_entry(job_id))

        full = await http.post("/v1/admin/dlq/retry", json={"ids": others}, headers=admin)
        assert full.json() == {"requeued": 0, "remaining": 2, "job_ids": []}

        # Room for two: cancel two of the requeued jobs (an admin may cancel any job).
        for job_id in servers[:2]:
            assert (await http.delete(f"/v1/jobs/{job_id}", headers=admin)).status_code == 202
        by_ids = await http.post(
            "/v1/admin/dlq/retry",
            json={"ids": [others[1], "not-in-the-dlq", others[0], servers[4]]},
            headers=admin,
        )
        # Oldest first whatever the order given; unknown ids are skipped, not counted.
        assert by_ids.json() == {"requeued": 2, "remaining": 1, "job_ids": [servers[4], others[0]]}
        left = (await http.get("/v1/admin/dlq", headers=admin)).json()["items"]
        assert [entry["job_id"] for entry in left] == [others[1]]


async def test_bulk_retry_from_the_command_line(
    resources: Resources, settings: Settings, redis: aioredis.Redis
) -> None:
    servers = [await dead_letter(resources, n, ErrorType.SERVER_ERROR, dlq_max=100)
               for n in range(2)]  # fmt: skip
    kept = await dead_letter(resources, 9, ErrorType.TIMEOUT, dlq_max=100)
    env = {**os.environ, **settings_env(settings)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "backend.cli", "dlq", *args], env=env,
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    done = cli("retry", "--error-type", "server_error")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"requeued": 2, "remaining": 0, "job_ids": servers}
    assert [j.decode() for j in await redis.zrange(keys.DLQ, 0, -1)] == [kept]
    both = cli("retry", kept, "--error-type", "timeout")
    assert both.returncode == 1 and "one of them" in both.stderr
    unknown = cli("retry", "--error-type", "nonsense")
    assert unknown.returncode == 1 and "server_error" in unknown.stderr
    single = cli("retry", kept)  # the one-entry form still works
    assert single.returncode == 0, single.stderr
    assert json.loads(single.stdout)["job_id"] == kept
