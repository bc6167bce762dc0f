"""The global PixelLab call cap, measured: 100 jobs queued at once against a mock that takes
2 s a call, with the cap at 10 and with no cap (the baseline), in the same run.

    .venv/bin/python load/bench_upstream.py [--jobs 100] [--latency-ms 2000] [--cap 10]

With a cap of C calls and L seconds a call, the queue drains at C / L jobs a second (5/s for
10 and 2 s); without a cap every job calls at once. Printed per run: the drain rate, submit
-> completed p50 and p99 (from the job records' own stamps), and the most calls the mock
saw at once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from backend.api.app import create_app
from backend.embedded_redis import EmbeddedRedis
from backend.store import keys
from backend.store.tokens import TokenStore
from fixtures.factories import auth, sprite_request
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import MOCK_API_KEY, WorkerThread, test_settings
from mocks.pixellab import create_mock_app

NO_CAP = 100_000


async def one_run(redis_url: str, mock: ThreadedUvicorn, cap: int, jobs: int) -> dict[str, Any]:
    settings = test_settings(
        redis_url, mock.url,
        pixellab={"max_concurrency": cap},
        limits={"per_user": jobs, "queue_capacity": jobs * 2},
        worker={"max_jobs": jobs},
        log_level="ERROR",
    )  # fmt: skip
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushall()
    token = await TokenStore(redis).create("bench")
    async with httpx.AsyncClient() as http:
        await http.post(mock.url + "/_mock/reset")
    with ThreadedUvicorn(create_app(settings)) as api, WorkerThread(settings):
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            ids = []
            for n in range(jobs):
                body = sprite_request(f"a capped benchmark sprite {cap} {n} {time.time()}")
                response = await http.post("/v1/jobs", json=body, headers=auth(token))
                ids.append(response.json()["job_id"])
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                statuses = [await redis.hget(keys.job(j), "status") for j in ids]
                if all(s == b"completed" for s in statuses):
                    break
                await asyncio.sleep(0.2)
            stats = (await http.get(mock.url + "/_mock/stats")).json()
    stamps = [
        tuple(float(v) for v in await redis.hmget(keys.job(j), ["created_at", "finished_at"]))
        for j in ids
    ]
    await redis.aclose()
    latencies = sorted(done - created for created, done in stamps)
    first, last = min(c for c, _ in stamps), max(d for _, d in stamps)
    return {
        "cap": "none" if cap == NO_CAP else cap,
        "jobs/s": jobs / (last - first),
        "p50 s": statistics.median(latencies),
        "p99 s": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "peak calls": stats["peak_in_flight"],
        "calls": stats["generations"],
    }


async def main(jobs: int, latency_ms: int, cap: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sq-bench-upstream-") as tmp:
        redis_server = EmbeddedRedis(Path(tmp), appendonly=False).start()
        mock = ThreadedUvicorn(create_mock_app(api_key=MOCK_API_KEY, latency_ms=latency_ms)).start()
        try:
            rows = [await one_run(redis_server.url, mock, c, jobs) for c in (cap, NO_CAP)]
        finally:
            mock.stop()
            redis_server.stop()
    print(f"{jobs} jobs queued at once, mock PixelLab at {latency_ms} ms a call")
    print(f"{'cap':>6} {'jobs/s':>8} {'p50 s':>7} {'p99 s':>7} {'peak calls':>11} {'calls':>6}")
    for row in rows:
        print(f"{row['cap']!s:>6} {row['jobs/s']:8.2f} {row['p50 s']:7.2f} {row['p99 s']:7.2f} "
              f"{row['peak calls']:11d} {row['calls']:6d}")  # fmt: skip
    ceiling = cap / (latency_ms / 1000)
    print(
        f"the cap's ceiling: {cap} / {latency_ms / 1000:g} s = {ceiling:.2f} jobs/s; "
        f"measured {rows[0]['jobs/s'] / ceiling:.2f} of it; "
        f"{rows[0]['jobs/s'] / rows[1]['jobs/s']:.2f} of the uncapped rate"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=2000)
    parser.add_argument("--cap", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.latency_ms, args.cap))
