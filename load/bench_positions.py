"""Benchmark: how fast a waiting job's new place reaches its SSE client, and what a walk costs.

    .venv/bin/python load/bench_positions.py            # about 30 s
    .venv/bin/python load/bench_positions.py --smoke    # a few seconds

An embedded Valkey and one ``spritequeue api`` child process with the production interval
(``SPRITEQ_JOBS__POSITION_INTERVAL_S`` = 1 s); no worker. This script admits ``--jobs`` real
jobs (the producer's admit script), opens one stream per job, then starts the jobs at the
head of the queue one by one, ``--rate`` a second, with the store's ``startAttempt`` (the
write a worker makes). Every start moves each job behind it up one place.

Two latencies, from the same run:
- **state change** (the baseline): the started job's own ``progress`` event, from just
  before the script call to the moment its client has read it (pub/sub, no announcer);
- **place change**: a waiting job's ``progress`` event with its new position, from the
  start that gave it that position to the moment its client has read it, for every job
  within the first ``RULES.every_move_up_to`` places (further back only a 5 % move is told; the
  events those jobs got are counted). It waits for the next announce, so its median should
  be near half the interval.

Then the Redis cost of one ``announcePositions`` walk over the waiting jobs, called directly:
when nothing moved (the usual tick) and just after a start (every job moved one place),
against a PING round trip measured alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from _harness import admit_jobs, api_child, open_event_stream, percentile

from backend.embedded_redis import EmbeddedRedis
from backend.limits.positions import RULES
from backend.logs import configure_logging
from backend.models import JobRecord, JobStatus
from backend.queue.resources import Resources, open_resources
from backend.store.tokens import TokenStore
from fixtures.attempts import start_attempt
from fixtures.stack import test_settings

JOBS_PER_USER = 10


@dataclass
class Run:
    """Jobs are indexed in queue order, so job ``i`` waits at place ``i + 1`` before any start,
    and start ``k`` (of job ``k``) moves every job ``i > k`` up to place ``i - k``."""

    jobs: int
    starts: list[float] = field(default_factory=list)  # perf_counter before start k
    places: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  # (arrival, place)
    state_ms: list[float] = field(default_factory=list)
    opened: int = 0

    def place_latencies_ms(self) -> tuple[list[float], int]:
        """For every (start, job behind it within the places where every move is announced):
        start -> the job's client shows the move.

        A job that starts itself before the next announce never shows that move (it is no
        longer waiting), which is right; those pairs are left out. Returns the latencies and
        how many moves of still-waiting jobs never reached their client."""
        found, missing = [], 0
        for k, started in enumerate(self.starts):
            for i in range(k + 1, min(self.jobs, k + 1 + RULES.every_move_up_to)):
                arrival = next((t for t, p in self.places.get(i, []) if p <= i - k), None)
                if arrival is not None:
                    found.append((arrival - started) * 1000)
                elif i >= len(self.starts):
                    missing += 1
        return sorted(found), missing

    def deep_events(self) -> int:
        """Place events received by jobs that waited beyond those places at the first start."""
        first = self.starts[0] if self.starts else float("inf")
        deep = range(RULES.every_move_up_to + 1, self.jobs)
        return sum(1 for i in deep for t, _ in self.places.get(i, []) if t >= first)


async def watch(
    address: tuple[str, int], index: int, job_id: str, token: str, run: Run,
    opened: asyncio.Event,
) -> None:  # fmt: skip
    """One client on a bare socket (``_harness.open_event_stream`` says why)."""
    reader, writer = await open_event_stream(address, job_id, token)
    try:
        pending = b""
        while data := await reader.read(65536):
            now = time.perf_counter()
            *lines, pending = (pending + data).split(b"\r\n")
            for line in lines:
                if line.startswith(b"data:"):
                    on_view(json.loads(line[5:]), index, run, now, opened)
    finally:
        writer.close()
        await writer.wait_closed()


def on_view(
    view: dict[str, object], index: int, run: Run, now: float, opened: asyncio.Event
) -> None:
    if index not in run.places:  # the first event replayed: the stream is open
        run.places[index] = []
        run.opened += 1
        if run.opened == run.jobs:
            opened.set()
    position = view.get("position")
    if view["status"] == "active" and index < len(run.starts):
        run.state_ms.append((now - run.starts[index]) * 1000)
    elif view["status"] == "queued" and isinstance(position, int):
        run.places[index].append((now, position))


async def start_jobs(resources: Resources, records: list[JobRecord], run: Run, count: int,
                     rate: float) -> None:  # fmt: skip
    began = time.perf_counter()
    for k in range(count):
        delay = began + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        run.starts.append(time.perf_counter())
        await start_attempt(resources.jobs, records[k].job_id)
    await asyncio.sleep(2.5)  # two more intervals: the last start's places arrive


async def walk_cost(
    resources: Resources, records: list[JobRecord], repeats: int
) -> dict[str, float]:
    """Median ms of a PING, a walk with nothing moved, and a walk after a start (all move)."""
    redis, jobs = resources.redis, resources.jobs
    snap = await resources.estimates.snapshot()  # the inputs the API's announcer uses too

    async def timed(call: Awaitable[object]) -> float:
        began = time.perf_counter()
        await call
        return (time.perf_counter() - began) * 1000

    def walk() -> Awaitable[object]:
        return jobs.announce_positions(
            slots=snap.slots, median_duration_s=snap.median_duration_s, limit=10_000,
            rules=RULES,
        )  # fmt: skip

    waiting = []
    for record in records:
        current = await jobs.get(record.job_id)
        if current is not None and current.status is JobStatus.QUEUED:
            waiting.append(current)
    await walk()
    pings, still, moved = [], [], []
    for head in waiting[:repeats]:
        pings.append(await timed(redis.ping()))
        still.append(await timed(walk()))
        await start_attempt(jobs, head.job_id)
        moved.append(await timed(walk()))
    return {"ping": statistics.median(pings), "still": statistics.median(still),
            "moved": statistics.median(moved), "waiting": len(waiting)}  # fmt: skip


async def settled_in_queue_order(resources: Resources, records: list[JobRecord]) -> list[JobRecord]:
    """The jobs in arq's order, once the announcer has settled their places.

    arq orders its queue by enqueue time in ms, then by job id, so jobs admitted in the same
    millisecond can swap places after admission; the next announce puts that right (within
    the first places; further back a one-place swap is below the 5 % rule).
    """
    await asyncio.sleep(2.0)
    by_id = {record.job_id: record for record in records}
    order = [job_id.decode() for job_id in await resources.redis.zrange(
        resources.settings.queue_name, 0, -1)]  # fmt: skip
    ordered = [by_id[job_id] for job_id in order if job_id in by_id]
    for place, record in enumerate(ordered, 1):
        stored = await resources.jobs.get(record.job_id)
        assert stored is not None and stored.position is not None, stored
        # Exact within the first places; further back a swap is told only past a 5 % move.
        slack = 0 if place <= RULES.every_move_up_to else place * RULES.min_move_ratio
        assert abs(stored.position - place) <= slack, (place, stored.position)
    return ordered


async def bench(args: argparse.Namespace, address: tuple[str, int], redis_url: str,
                api: psutil.Process) -> bool:  # fmt: skip
    settings = test_settings(redis_url, "http://127.0.0.1:9",
                             limits={"per_user": 10_000, "queue_capacity": 100_000})  # fmt: skip
    resources = await open_resources(settings)
    try:
        users = max(args.jobs // JOBS_PER_USER, 1)
        store = TokenStore(resources.redis)
        tokens = {f"bench{i}": await store.create(f"bench{i}") for i in range(users)}
        records = await admit_jobs(resources, args.jobs, per_user=JOBS_PER_USER)
        records = await settled_in_queue_order(resources, records)
        run, opened = Run(args.jobs), asyncio.Event()
        watchers = []
        for index, record in enumerate(records):
            token = tokens[record.user]
            client = watch(address, index, record.job_id, token, run, opened)
            watchers.append(asyncio.create_task(client))
        try:
            await asyncio.wait_for(opened.wait(), 60)
            cpu_before = sum(api.cpu_times()[:2])
            await start_jobs(resources, records, run, args.starts, args.rate)
            api_cpu_s = sum(api.cpu_times()[:2]) - cpu_before
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        cost = await walk_cost(resources, records, repeats=args.repeats)
        place_ms, missing = run.place_latencies_ms()
        report(args, run, place_ms, missing, cost, api_cpu_s)
        return bool(place_ms) and not missing and len(run.state_ms) == args.starts
    finally:
        await resources.close()


def report(
    args: argparse.Namespace, run: Run, place: list[float], missing: int,
    cost: dict[str, float], api_cpu_s: float,
) -> None:  # fmt: skip
    state = sorted(run.state_ms)
    print(f"\n{'':<40}{'state change':>14}{'place change':>14}{'ratio':>10}")
    print(f"{'moves measured':<40}{len(state):>14}{len(place):>14}")
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        a, b = percentile(state, q), percentile(place, q)
        print(f"{'latency ' + name + ' (ms)':<40}{a:>14.1f}{b:>14.1f}{b / a:>9.0f}x")
    print(f"{'latency max (ms)':<40}{state[-1]:>14.1f}{place[-1]:>14.1f}")
    print(f"\nmoves that never reached their client: {missing}")
    deep = args.jobs - RULES.every_move_up_to - 1
    print(f"place events for the {deep} jobs behind place {RULES.every_move_up_to} "
          f"(told of a 5 % move only): {run.deep_events()}")  # fmt: skip
    print(f"API CPU over the {args.starts} starts: {api_cpu_s:.2f} s "
          f"(its share of the announcing, and the fan-out to {args.jobs} streams)")  # fmt: skip
    waiting = int(cost["waiting"])
    print(f"\none announcePositions walk over {waiting} waiting jobs (median of {args.repeats}):")
    print(f"  PING round trip (baseline)        {cost['ping']:8.2f} ms   1.0x")
    print(f"  nothing moved                     {cost['still']:8.2f} ms "
          f"{cost['still'] / cost['ping']:5.1f}x")  # fmt: skip
    print(f"  just after a start                {cost['moved']:8.2f} ms "
          f"{cost['moved'] / cost['ping']:5.1f}x")  # fmt: skip
    print("A move waits for the next announce: with a 1 s interval, ~500 ms is the expected "
          "median and ~1 s the expected maximum.")  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds")
    parser.add_argument("--jobs", type=int, default=500, help="waiting jobs, one stream each")
    parser.add_argument("--starts", type=int, default=40, help="jobs started at the head")
    parser.add_argument("--rate", type=float, default=4.0, help="starts per second")
    parser.add_argument("--repeats", type=int, default=20, help="timed walks")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.starts, args.rate, args.repeats = 50, 6, 4.0, 5
    configure_logging("WARNING")
    print(f"bench_positions: {args.jobs} waiting jobs and streams, {args.starts} starts at "
          f"{args.rate:g}/s, announce interval 1 s")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), appendonly=False) as rds:
        limits = {"max_sse_per_user": JOBS_PER_USER, "queue_capacity": args.jobs}
        settings = test_settings(rds.url, "http://127.0.0.1:9", limits=limits)
        with api_child(settings, Path(tmp)) as (port, api):
            ok = asyncio.run(bench(args, ("127.0.0.1", port), rds.url, psutil.Process(api.pid)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
