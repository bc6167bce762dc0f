"""Redis round trips per submission, per status poll and per job, beside bare arq's own.

    .venv/bin/python load/bench_roundtrips.py [--jobs 200]

Each process reaches Redis through its own counting link (``fixtures.netproxy``, no delay):
a Redis client waits for each reply before it sends again, so the requests a link forwards
are the round trips its process made. Production defaults for the per-user submit rate and
the daily quota (both on). Background work (the API's position announcer, the worker's
heartbeat and lease renewal) is measured idle for the same length of time and taken off.

Phases, in one run on one embedded Valkey: N cache-miss submissions (no worker running),
N status polls, a worker draining the N jobs (mock PixelLab at 0 ms), N cache-hit
submissions from another user; then bare arq: N ``enqueue_job`` and a plain arq worker
running N no-op jobs, through links of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from backend.config import WorkerSettings
from backend.embedded_redis import EmbeddedRedis, free_port
from backend.store import keys
from backend.store.tokens import TokenStore
from fixtures.factories import wait_until
from fixtures.netproxy import SlowLink
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import MOCK_API_KEY, spawn, stop_process, test_settings
from mocks.pixellab import create_mock_app

IMAGE = {"width": 32, "height": 32}
RAW_QUEUE = "bench:roundtrips"


async def counted(
    link: SlowLink, idle_per_s: float, action: Callable[[], Awaitable[Any]]
) -> tuple[float, float]:
    """(round trips ``action`` made, beyond the link's idle rate; seconds it took)."""
    before, began = link.requests, time.perf_counter()
    await action()
    took = time.perf_counter() - began
    return max(link.requests - before - idle_per_s * took, 0.0), took


async def idle_rate(link: SlowLink, seconds: float = 3.0) -> float:
    before = link.requests
    await asyncio.sleep(seconds)
    return (link.requests - before) / seconds


async def wait_done(redis: aioredis.Redis, job_ids: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(keys.job(job_id), "status")
            states = await pipe.execute()
        if all(state == b"completed" for state in states):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the jobs did not complete")


async def spritequeue(redis_url: str, port: int, mock_url: str, jobs: int) -> dict[str, float]:
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushall()
    store = TokenStore(redis)
    alice, bob = await store.create("bench-alice"), await store.create("bench-bob")
    out: dict[str, float] = {}
    limits = {"per_user": jobs * 2, "queue_capacity": jobs * 4,
              "submits_per_minute": jobs * 10, "daily_generations": jobs * 10}  # fmt: skip
    with SlowLink(port, 0.0) as api_link, SlowLink(port, 0.0) as worker_link:
        # Production defaults for the worker's polling and heartbeat, not the tests' fast ones.
        defaults = WorkerSettings().model_dump(include={"poll_delay_s", "heartbeat_s"})
        api_settings = test_settings(api_link.url, mock_url, limits=limits)
        worker_settings = test_settings(worker_link.url, mock_url, limits=limits, worker=defaults)
        api_port = free_port()
        api = spawn(["api", "--port", str(api_port)], api_settings)
        worker = spawn(["worker", "--metrics-port", "0"], worker_settings)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
                for _ in range(200):
                    try:
                        if (await http.get("/health/live")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)

                async def worker_up() -> bool:
                    return bool(await redis.exists(keys.WORKERS))

                await wait_until(worker_up, 30, "the worker's first heartbeat")
                await asyncio.sleep(2)  # past start-up
                api_idle, worker_idle = await asyncio.gather(
                    idle_rate(api_link), idle_rate(worker_link)
                )
                out["worker idle round trips/s"] = worker_idle
                bodies = [{"description": f"a counted sprite {n} {time.time()}",
                           "image_size": IMAGE} for n in range(jobs)]  # fmt: skip
                ids: list[str] = []

                async def submit_all(token: str, want: int) -> None:
                    for body in bodies:
                        answer = await http.post(
                            "/v1/jobs", json=body, headers={"Authorization": f"Bearer {token}"}
                        )
                        assert answer.status_code == want, answer.text
                        ids.append(answer.json()["job_id"])

                worker_before, began = worker_link.requests, time.perf_counter()
                trips, _ = await counted(api_link, api_idle, lambda: submit_all(alice, 202))
                out["cache-miss submit"] = trips / jobs
                queued = list(ids)
                await wait_done(redis, queued)
                worker_trips = worker_link.requests - worker_before
                worker_trips -= worker_idle * (time.perf_counter() - began)
                out["job in the worker"] = max(worker_trips, 0.0) / jobs

                async def poll_all() -> None:
                    for job_id in queued:
                        answer = await http.get(
                            f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {alice}"}
                        )
                        assert answer.status_code == 200, answer.text

                trips, _ = await counted(api_link, api_idle, poll_all)
                out["status poll"] = trips / jobs
                ids.clear()
                trips, _ = await counted(api_link, api_idle, lambda: submit_all(bob, 200))
                out["cache-hit submit"] = trips / jobs
        finally:
            stop_process(worker)
            stop_process(api)
            await redis.aclose()
    return out


async def bare_arq(port: int, jobs: int) -> dict[str, float]:
    from arq.connections import RedisSettings, create_pool

    out: dict[str, float] = {}
    with SlowLink(port, 0.0) as producer_link, SlowLink(port, 0.0) as worker_link:
        pool = await create_pool(RedisSettings.from_dsn(producer_link.url))
        try:

            async def enqueue_all() -> None:
                for n in range(jobs):
                    await pool.enqueue_job("noop", n, _job_id=f"rt{n}", _queue_name=RAW_QUEUE)

            trips, _ = await counted(producer_link, 0.0, enqueue_all)
            out["cache-miss submit"] = trips / jobs
            argv = [sys.executable, __file__, "--role", "raw-worker", "--redis-url",
                    worker_link.url]  # fmt: skip
            worker = await asyncio.create_subprocess_exec(*argv)
            try:
                await asyncio.sleep(3)  # started; it drains the queue meanwhile
                before = worker_link.requests
                await asyncio.sleep(3)
                out["worker idle round trips/s"] = (worker_link.requests - before) / 3
            finally:
                worker.terminate()
                await worker.wait()
            # Drained before the idle window: its round trips per job are the total less idle.
            total = worker_link.requests
            out["job in the worker"] = max(total - 6 * out["worker idle round trips/s"], 0) / jobs
        finally:
            await pool.aclose()
    return out


async def noop(ctx: dict[str, Any], number: int) -> None:
    return None


def run_raw_worker(redis_url: str) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    Worker(
        functions=[func(noop, name="noop")],
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=RAW_QUEUE,
        keep_result=0,
    ).run()


async def main(jobs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sq-bench-rt-") as tmp:
        server = EmbeddedRedis(Path(tmp), appendonly=False).start()
        mock = ThreadedUvicorn(create_mock_app(api_key=MOCK_API_KEY)).start()
        try:
            ours = await spritequeue(server.url, server.port, mock.url, jobs)
            await aioredis.Redis.from_url(server.url).flushall()
            theirs = await bare_arq(server.port, jobs)
        finally:
            mock.stop()
            server.stop()
    targets = {"cache-miss submit": 3, "cache-hit submit": 2, "job in the worker": 6}
    print(f"Redis round trips, {jobs} of each, one process per link")
    print(f"{'':28} {'spritequeue':>12} {'bare arq':>9} {'target':>7}")
    for name, value in ours.items():
        base = theirs.get(name)
        target = targets.get(name)
        verdict = "" if target is None else ("met" if value <= target + 0.05 else "not met")
        print(f"{name:28} {value:12.2f} {'' if base is None else f'{base:9.2f}':>9} "
              f"{'' if target is None else f'<= {target}':>7} {verdict}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--role", choices=["raw-worker"], help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "raw-worker":
        run_raw_worker(args.redis_url)
    else:
        asyncio.run(main(args.jobs))
