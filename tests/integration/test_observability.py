"""Observability end to end: exact counter deltas, scrape-time gauges, honest readiness, JSON logs.

The thread-based stack runs the API and the worker in this process, so the API's ``/metrics``
shows both sides' counters; the worker's own endpoint is tested on a real child process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from backend.config import Settings
from backend.embedded_redis import EmbeddedRedis, free_port
from backend.observability import QueueCollector, queue_registry, sync_redis_client
from backend.store import keys
from fixtures.factories import auth, sprite_request, wait_for_status
from fixtures.stack import MOCK_API_KEY, spawn, stop_process, wait_http
from tests.conftest import Stack

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
FINAL = {"completed", "failed", "cancelled"}


def parse(text: str | bytes) -> Samples:
    text = text.decode() if isinstance(text, bytes) else text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient, url: str = "/metrics") -> Samples:
    response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def until(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# Every counter the mixed run touches, and by how much it must move (L1 only: no Firestore).
EXPECTED_DELTAS = {
    ("spritequeue_jobs_submitted_total", ("outcome", "accepted")): 4,
    ("spritequeue_jobs_submitted_total", ("outcome", "cache_hit")): 1,
    ("spritequeue_jobs_submitted_total", ("outcome", "deduplicated")): 1,
    ("spritequeue_jobs_submitted_total", ("outcome", "user_limit")): 1,
    ("spritequeue_jobs_submitted_total", ("outcome", "queue_full")): 1,
    ("spritequeue_jobs_submitted_total", ("outcome", "invalid")): 1,
    ("spritequeue_jobs_finished_total", ("status", "completed")): 3,
    ("spritequeue_jobs_finished_total", ("status", "failed")): 1,
    ("spritequeue_jobs_finished_total", ("status", "cancelled")): 0,
    ("spritequeue_job_retries_total", ("type", "invalid_request")): 0,
    # submit looks in L1 for every valid plain request before it knows the caller, the
    # duplicate and the refused ones too (7 misses, 1 hit); the worker looks again before it
    # calls PixelLab (4 misses)
    ("spritequeue_cache_lookups_total", ("layer", "l1", "result", "hit")): 1,
    ("spritequeue_cache_lookups_total", ("layer", "l1", "result", "miss")): 11,
    ("spritequeue_cache_lookups_total", ("layer", "l1", "result", "error")): 0,
    ("spritequeue_cache_writes_total", ("layer", "l1", "result", "ok")): 3,
    ("spritequeue_pixellab_requests_total", ("outcome", "ok")): 3,
    ("spritequeue_pixellab_requests_total", ("outcome", "invalid_request")): 1,
    ("spritequeue_job_duration_seconds_count", ()): 4,
    ("spritequeue_job_wait_seconds_count", ()): 4,
    ("spritequeue_pixellab_request_duration_seconds_count", ()): 4,
}


def deltas(before: Samples, after: Samples) -> dict[Any, float]:
    moved = {}
    for (name, flat), _ in EXPECTED_DELTAS.items():
        labels = dict(zip(flat[::2], flat[1::2], strict=True))
        moved[(name, flat)] = value(after, name, **labels) - value(before, name, **labels)
    return moved


async def test_mixed_jobs_move_each_counter_by_exactly_the_right_amount(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
) -> None:
    stack = make_stack(make_settings(limits={"per_user": 1, "queue_capacity": 2}))
    alice, bob, root = (auth(tokens[name]) for name in ("alice", "bob", "admin"))
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:

        async def submit(headers: dict[str, str], description: str, status: int) -> Any:
            response = await http.post(
                "/v1/jobs", json=sprite_request(description), headers=headers
            )
            assert response.status_code == status, response.text
            return response.json()

        async def settle(job: dict[str, Any], token: str) -> str:
            done = await wait_for_status(http, job["job_id"], token, FINAL, timeout_s=15)
            return str(done["status"])

        before = await scrape(http)
        missed = await submit(alice, "an observed lantern", 202)
        assert await settle(missed, tokens["alice"]) == "completed"
        assert (await submit(bob, "an observed lantern", 200))["cached"] is True
        failing = await submit(alice, "[mock:failure] a cursed lantern", 202)
        assert await settle(failing, tokens["alice"]) == "failed"

        slow = await submit(alice, "[mock-latency:1500] a slow lantern", 202)
        again = await submit(alice, "[mock-latency:1500] a slow lantern", 202)
        assert again["deduplicated"] is True and again["job_id"] == slow["job_id"]
        assert (await submit(alice, "one lantern too many", 429))["error"]["code"] == "user_limit"
        slow_bob = await submit(bob, "[mock-latency:1500] a slow bell", 202)
        assert (await submit(root, "no room left", 503))["error"]["code"] == "queue_full"
        await submit(alice, "", 422)

        during = await scrape(http)  # both slow jobs hold the two slots now
        assert value(during, "spritequeue_queue_jobs", state="inflight") == 2
        assert value(during, "spritequeue_queue_state", state="critical") == 1
        assert value(during, "spritequeue_queue_state", state="ok") == 0
        assert value(during, "spritequeue_queue_capacity") == 2
        assert value(during, "spritequeue_dlq_jobs") == 1
        assert value(during, "spritequeue_workers_alive") == 1
        assert value(during, "spritequeue_scrape_redis_up") == 1

        assert await settle(slow, tokens["alice"]) == "completed"
        assert await settle(slow_bob, tokens["bob"]) == "completed"
        # A job is visibly final a moment before the worker increments its counter.
        after: Samples = {}

        async def counted() -> bool:
            nonlocal after
            after = await scrape(http)
            return deltas(before, after) == EXPECTED_DELTAS

        try:
            await until(counted, timeout_s=3)
        except AssertionError:
            assert deltas(before, after) == EXPECTED_DELTAS
        assert value(after, "spritequeue_queue_jobs", state="inflight") == 0
        assert value(after, "spritequeue_queue_state", state="ok") == 1


async def test_collector_reads_redis_at_scrape_time_and_logs_a_state_change_once(
    make_settings: Callable[..., Settings], redis: aioredis.Redis
) -> None:
    settings = make_settings(limits={"queue_capacity": 3, "warning_at": 2})
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - (settings.jobs.dlq_retention_s + 60) * 1000
    await redis.zadd(keys.INFLIGHT, {"a": now_ms, "b": now_ms, "c": now_ms})
    await redis.zadd(keys.ACTIVE, {"a": now_ms})
    await redis.zadd(keys.DLQ, {"expired": old_ms, "kept": now_ms})
    await redis.zadd(keys.WORKERS, {"fresh": now_ms, "stale": now_ms - 60_000})
    api, api_redis = queue_registry(settings)
    worker, worker_redis = queue_registry(settings)  # a second process looking at the same Redis
    try:
        with capture_logs() as logs:
            first, second = parse(generate_latest(api)), parse(generate_latest(worker))
            await redis.zrem(keys.INFLIGHT, "b", "c")
            third = parse(generate_latest(worker))
    finally:
        api_redis.close()
        worker_redis.close()
    assert first == second
    assert [value(first, "spritequeue_queue_jobs", state=s) for s in ("waiting", "active")] == [
        2,
        1,
    ]
    assert value(first, "spritequeue_queue_jobs", state="inflight") == 3
    assert value(first, "spritequeue_dlq_jobs") == 1
    assert value(first, "spritequeue_workers_alive") == 1
    assert value(first, "spritequeue_queue_state", state="critical") == 1
    assert value(third, "spritequeue_queue_state", state="ok") == 1
    changes = [entry for entry in logs if entry["event"] == "queue_state_changed"]
    assert [(c["previous"], c["state"], c["inflight"]) for c in changes] == [
        ("ok", "critical", 3),
        ("critical", "ok", 1),
    ]
    assert (await redis.get(keys.QUEUE_STATE)) == b"ok"


def test_a_scrape_without_redis_answers_fast_with_redis_up_zero(
    make_settings: Callable[..., Settings],
) -> None:
    client = sync_redis_client(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    collector = QueueCollector(client, make_settings())
    began = time.monotonic()
    families = {family.name: family for family in collector.collect()}
    client.close()
    assert time.monotonic() - began < 1.0
    assert families["spritequeue_scrape_redis_up"].samples[0].value == 0
    assert "spritequeue_queue_jobs" not in families  # no stale or made-up figures


READY_ADMIN = "ready-admin-" + "k" * 32


async def ready(http: httpx.AsyncClient, token: str | None = None) -> tuple[int, dict[str, Any]]:
    response = await http.get("/health/ready", headers=auth(token) if token else {})
    return response.status_code, response.json()


async def test_ready_needs_a_live_worker(
    make_settings: Callable[..., Settings], make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(make_settings(admin_token=READY_ADMIN), worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        status, body = await ready(http, READY_ADMIN)
        assert status == 503 and body["status"] == "unavailable"
        assert body["checks"]["workers"] == body["checks"]["workers"] | {
            "status": "down",
            "alive": 0,
        }
        assert body["checks"]["redis"]["status"] == "ok"

        stack.start_worker()
        await until(lambda: _status_is(http, 200))
        status, body = await ready(http, READY_ADMIN)
        assert body["checks"]["workers"]["alive"] == 1
        assert body["checks"]["cache"] == body["checks"]["cache"] | {
            "status": "ok",
            "l2_enabled": False,
        }
        assert body["checks"]["queue"]["state"] == "ok"

        stack.stop_worker()  # a worker that stops cleanly takes itself off the list at once
        await until(lambda: _status_is(http, 503), timeout_s=2)


async def _status_is(http: httpx.AsyncClient, expected: int) -> bool:
    return (await ready(http))[0] == expected


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Valkey of this test's own, which it may stop (never the session's)."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    yield server
    server.stop()


async def test_ready_is_503_within_a_second_when_redis_stops_and_200_when_it_returns(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    own_redis: EmbeddedRedis,
) -> None:
    stack = make_stack(make_settings(redis_url=own_redis.url))
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
            await until(lambda: _status_is(http, 200))
            own_redis.stop()
            began = time.monotonic()
            status, body = await ready(http)
            assert time.monotonic() - began < 1.5
            assert status == 503 and body["checks"]["redis"]["status"] == "down"
            outage = await scrape(http)  # the process's own counters still come out
            assert value(outage, "spritequeue_scrape_redis_up") == 0
            assert ("spritequeue_queue_jobs", frozenset({("state", "inflight")})) not in outage

            own_redis.start()  # same port and folder
            await until(lambda: _status_is(http, 200), timeout_s=10)
            assert value(await scrape(http), "spritequeue_scrape_redis_up") == 1
    finally:
        stack.stop()  # before the fixture stops Redis, so the worker shuts down cleanly


async def test_ready_tells_anonymous_callers_only_states_and_admins_the_details(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    own_redis: EmbeddedRedis,
) -> None:
    stack = make_stack(make_settings(redis_url=own_redis.url, admin_token=READY_ADMIN))
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
            await until(lambda: _status_is(http, 200))
            own_redis.stop()
            status, anonymous = await ready(http)
            assert status == 503 and anonymous["status"] == "unavailable"
            assert anonymous["checks"]["redis"] == {"status": "down"}
            for check in anonymous["checks"].values():
                assert set(check) == {"status"} and check["status"] in {"ok", "degraded", "down"}
            text = json.dumps(anonymous)
            assert str(own_redis.port) not in text and "Error" not in text
            # A wrong token is the anonymous answer, not a 401 (load balancers send none).
            status, wrong = await ready(http, "sq_" + "x" * 43)
            assert status == 503 and wrong == anonymous

            status, detailed = await ready(http, READY_ADMIN)
            assert status == 503 and detailed["checks"]["redis"]["error"]
            assert "layers" in detailed["checks"]["cache"]  # the figures are the admin's
            own_redis.start()  # so the worker shuts down cleanly
            await until(lambda: _status_is(http, 200), timeout_s=10)
    finally:
        stack.stop()


async def test_worker_process_serves_its_metrics_and_logs_json_carrying_the_request_id(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
) -> None:
    settings = make_settings(log_level="INFO")
    stack = make_stack(settings, worker=False)
    port = free_port()
    worker = spawn(["worker", "--metrics-port", str(port)], settings, CAPTURE="1")
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics")
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
            headers = {**auth(tokens["alice"]), "X-Request-ID": "req-obs-42"}
            response = await http.post(
                "/v1/jobs", json=sprite_request("a lantern lit by a worker"), headers=headers
            )
            assert response.status_code == 202 and response.headers["x-request-id"] == "req-obs-42"
            job_id = response.json()["job_id"]
            done = await wait_for_status(http, job_id, tokens["alice"], FINAL, timeout_s=15)
            assert done["status"] == "completed"
            own = f"http://127.0.0.1:{port}/metrics"

            async def finished() -> bool:
                seen = await scrape(http, own)
                return value(seen, "spritequeue_jobs_finished_total", status="completed") == 1

            await until(finished)
            seen = await scrape(http, own)
            api_side = await scrape(http)
    finally:
        stop_process(worker)
    # Counters of a fresh process: exactly this one job's work, nothing of the API's.
    assert value(seen, "spritequeue_pixellab_requests_total", outcome="ok") == 1
    assert value(seen, "spritequeue_cache_lookups_total", layer="l1", result="miss") == 1
    assert value(seen, "spritequeue_jobs_submitted_total", outcome="accepted") == 0
    assert value(seen, "spritequeue_job_duration_seconds_count") == 1
    assert value(seen, "spritequeue_workers_alive") == 1
    assert value(seen, "spritequeue_scrape_redis_up") == 1
    assert value(seen, "spritequeue_queue_jobs", state="inflight") == 0
    assert value(api_side, "spritequeue_workers_alive") == 1

    assert worker.stderr is not None
    stderr = worker.stderr.read().decode()
    worker.stderr.close()
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # all JSON
    assert all({"timestamp", "level", "event", "logger"} <= line.keys() for line in lines)
    completed = [line for line in lines if line["event"] == "job_completed"]
    assert len(completed) == 1
    assert (
        completed[0] | {"job_id": job_id, "user_id": "alice", "request_id": "req-obs-42"}
        == (completed[0])
    )
    assert MOCK_API_KEY not in stderr and tokens["alice"] not in stderr


async def test_admin_stats_are_read_from_redis(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
    redis: aioredis.Redis,
) -> None:
    stack = make_stack(make_settings())
    await redis.lpush(keys.DURATIONS, *(f"{n}.0" for n in range(1, 21)))
    await redis.hset(keys.STATS, mapping={"cache_hits": 3, "cache_misses": 1})
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        # The worker thread is up before its first heartbeat lands; the figures need it.
        await until(lambda: _status_is(http, 200))
        job = await http.post(
            "/v1/jobs",
            json=sprite_request("[mock-latency:1000] a lantern in flight"),
            headers=auth(tokens["alice"]),
        )
        assert job.status_code == 202
        assert (await http.get("/v1/admin/stats", headers=auth(tokens["alice"]))).status_code == 403
        response = await http.get("/v1/admin/stats", headers=auth(tokens["admin"]))
        assert response.status_code == 200
        stats = response.json()
        await wait_for_status(http, job.json()["job_id"], tokens["alice"], FINAL)
    assert stats["per_user_inflight"] == {"alice": 1}
    assert stats["queue"] == stats["queue"] | {"inflight": 1, "capacity": 500, "state": "ok"}
    assert stats["workers_alive"] == 1
    (beat,) = stats["workers"]
    assert beat["concurrency"] == stack.settings.worker.max_jobs and beat["running"] in (0, 1)
    assert 0 <= beat["age_s"] < 15
    # The seeded 3 hits and 1 miss, plus this submission's miss.
    assert stats["cache"] == {"hits": 3, "misses": 2, "hit_rate": 0.6}
    assert stats["durations_s"] == {"samples": 20, "p50": 10.0, "p95": 19.0}
    assert stats["dlq_size"] == 0


async def test_cache_hits_and_misses_are_counted_in_redis_across_processes(
    client: httpx.AsyncClient, tokens: dict[str, str], redis: aioredis.Redis
) -> None:
    body = sprite_request("a counted lantern")
    first = await client.post("/v1/jobs", json=body, headers=auth(tokens["alice"]))
    await wait_for_status(client, first.json()["job_id"], tokens["alice"], FINAL)
    assert (
        await client.post("/v1/jobs", json=body, headers=auth(tokens["bob"]))
    ).status_code == 200
    stats = await redis.hmget(keys.STATS, ["cache_hits", "cache_misses"])
    # Submission-level: alice's submission missed, bob's was answered from the cache. The
    # worker's own look-ups and result downloads are not submissions and are not counted.
    assert stats == [b"1", b"1"]
