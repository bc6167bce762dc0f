"""What an idle worker costs: Redis commands a second and CPU, waking on work against the
old 10 ms poll (the baseline, same run), and how soon a new job starts after its submit.

    .venv/bin/python load/bench_idle.py [--seconds 10]

One ``spritequeue worker`` process on an embedded Valkey with nothing queued; Redis's
``INFO commandstats`` counts every command, ``psutil`` the worker's CPU. Then 20 jobs are
admitted one at a time, 0.5 s apart, and each job's wait (admitted -> started, from its
record) is taken.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis

from backend.embedded_redis import EmbeddedRedis
from backend.models import SpriteRequest
from backend.queue.producer import Producer
from backend.queue.resources import open_resources
from backend.store import keys
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import MOCK_API_KEY, spawn, stop_process, test_settings
from mocks.pixellab import create_mock_app


async def commands(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def one_run(
    redis_url: str, mock_url: str, idle_poll_s: float, seconds: float
) -> dict[str, Any]:
    settings = test_settings(
        redis_url, mock_url,
        worker={"idle_poll_s": idle_poll_s, "heartbeat_s": 5.0},
        jobs={"position_interval_s": 1.0},
        limits={"per_user": 100},
    )  # fmt: skip
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushall()
    worker: subprocess.Popen[bytes] = spawn(["worker", "--metrics-port", "0"], settings)
    try:
        await asyncio.sleep(4)  # start-up done, first beats sent
        process = psutil.Process(worker.pid)
        cpu_before, calls_before = process.cpu_times(), await commands(redis)
        await asyncio.sleep(seconds)
        cpu_after, calls_after = process.cpu_times(), await commands(redis)
        cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        resources = await open_resources(settings)
        producer = Producer(resources)
        waits = []
        for n in range(20):
            request = SpriteRequest.model_validate(
                {"description": f"an idle-bench sprite {idle_poll_s} {n} {time.time()}",
                 "image_size": {"width": 32, "height": 32}}
            )  # fmt: skip
            job = (await producer.submit("bench", request)).view.job_id
            await asyncio.sleep(0.5)
            created, started = await redis.hmget(keys.job(job), ["created_at", "started_at"])
            if started:
                waits.append((float(started) - float(created)) * 1000)
        await resources.close()
    finally:
        stop_process(worker)
        await redis.aclose()
    return {
        "idle poll": f"{idle_poll_s:g} s",
        "commands/s": (calls_after - calls_before) / seconds,
        "cpu %": 100 * cpu_s / seconds,
        "start p50 ms": statistics.median(waits) if waits else float("nan"),
        "start max ms": max(waits) if waits else float("nan"),
    }


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="sq-bench-idle-") as tmp:
        server = EmbeddedRedis(Path(tmp), appendonly=False).start()
        mock = ThreadedUvicorn(create_mock_app(api_key=MOCK_API_KEY)).start()
        try:
            rows = [await one_run(server.url, mock.url, s, seconds) for s in (0.01, 2.0)]
        finally:
            mock.stop()
            server.stop()
    print(f"one idle worker, {seconds:g} s; then 20 jobs admitted 0.5 s apart")
    header = ("idle poll", "commands/s", "cpu %", "start p50 ms", "start max ms")
    print("{:>10} {:>11} {:>6} {:>13} {:>13}".format(*header))
    for r in rows:
        print(f"{r['idle poll']:>10} {r['commands/s']:11.1f} {r['cpu %']:6.2f} "
              f"{r['start p50 ms']:13.2f} {r['start max ms']:13.2f}")  # fmt: skip
    print("(the 0.01 s row is the old behaviour: a poll every 10 ms whatever happens)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args().seconds))
