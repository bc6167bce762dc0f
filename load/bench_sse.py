"""Benchmark: many concurrent SSE streams on ONE API process; delivery latency and API memory.

    .venv/bin/python load/bench_sse.py            # 10 streams (baseline), then 1,000
    .venv/bin/python load/bench_sse.py --smoke    # 10, then 50: a few seconds, for CI

An embedded Valkey and one ``spritequeue api`` child process; no workers and no PixelLab:
this script admits real jobs (the producer's admit script), opens one stream per job, then
moves the jobs through their stages at a steady rate with the store's own ``progressJob``
and ``finishJob`` scripts, exactly the writes a worker makes. Latency is the time from just
before the script call (so it includes that round trip) to the moment the client has read
the event. Each phase runs at the same event rate, so the ratios show what holding many open
streams costs. The API's RSS and CPU time come from psutil. This process's garbage collector
is paused while a phase is measured, so its own pauses are not counted as delivery latency.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from _harness import admit_jobs, api_child, open_event_stream, percentile

from backend.embedded_redis import EmbeddedRedis
from backend.logs import configure_logging
from backend.models import JobRecord, Stage
from backend.queue.resources import Resources, open_resources
from backend.store.tokens import TokenStore
from fixtures.attempts import finish_attempt, start_attempt
from fixtures.stack import test_settings

STREAMS_PER_USER = 10


@dataclass
class Phase:
    streams: int
    steps: int  # driven events per job; the last one completes it
    rate: float  # events per second, across all jobs
    sent: dict[tuple[int, int], float] = field(default_factory=dict)
    received: dict[tuple[int, int], float] = field(default_factory=dict)
    finals: int = 0
    rss_open: int = 0
    rss_end: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def latencies_ms(self) -> list[float]:
        return sorted(
            (self.received[key] - sent) * 1000
            for key, sent in self.sent.items()
            if key in self.received
        )


def stage_for(step: int, steps: int) -> tuple[Stage, int]:
    """The worker's stages, with extra 'submitted' ticks in between when there are many steps."""
    if step == 0:
        return Stage.STARTED, 5
    if step == steps - 2:
        return Stage.RECEIVED, 90
    return Stage.SUBMITTED, min(89, 10 + (step - 1) * 79 // max(steps - 3, 1))


async def watch(
    address: tuple[str, int], index: int, job_id: str, token: str, phase: Phase,
    ready: asyncio.Event, opened: list[int],
) -> None:  # fmt: skip
    """One client on a bare socket (``_harness.open_event_stream`` says why): count events
    (one ``data:`` line each) and stamp their arrivals."""
    reader, writer = await open_event_stream(address, job_id, token)
    try:
        count, last_event, pending = -1, b"", b""  # event 0 is the replayed 'queued' state
        while data := await reader.read(65536):
            now = time.perf_counter()
            *lines, pending = (pending + data).split(b"\r\n")
            for line in lines:  # chunk-size lines of the chunked body never match these
                if line.startswith(b"event:"):
                    last_event = line[7:]
                elif line.startswith(b"data:"):
                    if count >= 0 and b'"status":"queued"' in line:
                        continue  # a waiting job's new place (limits.positions), not a step
                    count += 1
                    if count:
                        phase.received[(index, count)] = now
                        continue
                    opened[0] += 1
                    if opened[0] == phase.streams:
                        ready.set()
        if last_event == b"completed":
            phase.finals += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def drive(resources: Resources, records: list[JobRecord], phase: Phase) -> None:
    """Advance every job one step in turn, ``phase.rate`` script calls per second."""
    jobs = resources.jobs
    tokens: dict[str, str] = {}  # job id -> its attempt's fence
    began = time.perf_counter()
    tick = 0
    for step in range(phase.steps):
        for index, record in enumerate(records):
            delay = began + tick / phase.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tick += 1
            phase.sent[(index, step + 1)] = time.perf_counter()
            if step == phase.steps - 1:
                await finish_attempt(jobs, record, tokens[record.job_id])
                continue
            if step == 0:
                record, tokens[record.job_id] = await start_attempt(jobs, record.job_id)
            stage, progress = stage_for(step, phase.steps)
            record = records[index] = record.model_copy(
                update={"stage": stage, "progress": progress}
            )
            await jobs.progress(record, "stage", "progress", token=tokens[record.job_id])


async def run_phase(
    address: tuple[str, int], resources: Resources, tokens: list[str], api: psutil.Process,
    phase: Phase,
) -> None:  # fmt: skip
    records = await admit_jobs(resources, phase.streams, per_user=STREAMS_PER_USER)
    ready, opened = asyncio.Event(), [0]
    watchers = [
        asyncio.create_task(
            watch(address, i, r.job_id, tokens[i // STREAMS_PER_USER], phase, ready, opened)
        )
        for i, r in enumerate(records)
    ]
    try:
        await asyncio.wait_for(ready.wait(), 60)
        phase.rss_open = api.memory_info().rss
        # This process's own GC pauses (1,000 streams' worth of objects) would be charged to
        # the server as latency, so the collector waits until the phase is measured.
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            cpu_before, wall_before = sum(api.cpu_times()[:2]), time.perf_counter()
            await drive(resources, records, phase)
            await asyncio.wait_for(asyncio.gather(*watchers), 30)
            phase.wall_s = time.perf_counter() - wall_before
            phase.cpu_s = sum(api.cpu_times()[:2]) - cpu_before
        finally:
            gc.enable()
            gc.unfreeze()
        phase.rss_end = api.memory_info().rss
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


def complete(phase: Phase) -> bool:
    """Every event reached its client, and every stream ended with 'completed'."""
    return len(phase.latencies_ms) == len(phase.sent) and phase.finals == phase.streams


def report(base: Phase, main: Phase, rss_idle: int, rss_after: int) -> None:
    def row(name: str, a: float, b: float, fmt: str = "{:.2f}") -> None:
        ratio = f"{b / a:.2f}x" if a else "-"
        print(f"{name:<34}{fmt.format(a):>14}{fmt.format(b):>14}{ratio:>10}")

    mib = 1024 * 1024
    print(f"\n{'':<34}{f'{base.streams} streams':>14}{f'{main.streams} streams':>14}{'ratio':>10}")
    for phase in (base, main):
        if not complete(phase):
            print(f"!! {phase.streams} streams: {len(phase.latencies_ms)}/{len(phase.sent)} "
                  f"events, {phase.finals}/{phase.streams} completed")  # fmt: skip
    row("events delivered", len(base.latencies_ms), len(main.latencies_ms), "{:.0f}")
    row("event rate (events/s)", len(base.sent) / base.wall_s, len(main.sent) / main.wall_s,
        "{:.0f}")  # fmt: skip
    lat_a, lat_b = base.latencies_ms, main.latencies_ms
    row("latency p50 (ms)", percentile(lat_a, 0.50), percentile(lat_b, 0.50))
    row("latency p99 (ms)", percentile(lat_a, 0.99), percentile(lat_b, 0.99))
    row("latency max (ms)", max(lat_a, default=0), max(lat_b, default=0))
    row("latency mean (ms)", statistics.fmean(lat_a), statistics.fmean(lat_b))
    row("API RSS, streams open (MiB)", base.rss_open / mib, main.rss_open / mib, "{:.1f}")
    row("API RSS, end of phase (MiB)", base.rss_end / mib, main.rss_end / mib, "{:.1f}")
    per_a = (base.rss_open - rss_idle) / base.streams / 1024
    per_b = (main.rss_open - rss_idle) / main.streams / 1024
    row("API RSS over idle per stream (KiB)", per_a, per_b, "{:.1f}")
    row("API CPU per event (ms)", base.cpu_s / len(base.sent) * 1000,
        main.cpu_s / len(main.sent) * 1000)  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nAPI RSS idle {rss_idle / mib:.1f} MiB; after all streams closed "
          f"{rss_after / mib:.1f} MiB. Latency: script call -> client has the event.\n"
          f"{os.cpu_count()} CPUs, load average {load} (other work on the machine shows up "
          "in the tail).")  # fmt: skip


async def bench(
    args: argparse.Namespace, address: tuple[str, int], redis_url: str, api: int
) -> bool:
    """Run both phases and print the table; False if any event was lost."""
    settings = test_settings(redis_url, "http://127.0.0.1:9",
                             limits={"per_user": 10_000, "queue_capacity": 100_000})  # fmt: skip
    resources = await open_resources(settings)
    try:
        store = TokenStore(resources.redis)
        users = max(args.streams // STREAMS_PER_USER, 1)
        tokens = [await store.create(f"bench{i}") for i in range(users)]
        process = psutil.Process(api)
        # Warm-up (first requests import and allocate); idle RSS is measured after it.
        await run_phase(address, resources, tokens, process, Phase(2, steps=4, rate=args.rate))
        await asyncio.sleep(0.5)
        rss_idle = process.memory_info().rss
        base = Phase(10, steps=max(4, int(args.rate * args.baseline_s / 10)), rate=args.rate)
        await run_phase(address, resources, tokens, process, base)
        main = Phase(args.streams, steps=4, rate=args.rate)
        await run_phase(address, resources, tokens, process, main)
        await asyncio.sleep(0.5)
        report(base, main, rss_idle, process.memory_info().rss)
        return complete(base) and complete(main)
    finally:
        await resources.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="50 streams, a few seconds")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=250.0, help="state changes per second")
    parser.add_argument("--baseline-s", type=float, default=8.0)
    args = parser.parse_args()
    if args.smoke:
        args.streams, args.rate, args.baseline_s = 50, 100.0, 1.0
    configure_logging("WARNING")
    print(f"bench_sse: {args.streams} streams at {args.rate:g} events/s, baseline 10 streams")

    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), appendonly=False) as rds:
        limits = {"max_sse_per_user": 10 * STREAMS_PER_USER}
        settings = test_settings(rds.url, "http://127.0.0.1:9", limits=limits)
        with api_child(settings, Path(tmp)) as (port, api):
            ok = asyncio.run(bench(args, ("127.0.0.1", port), rds.url, api.pid))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
