"""One-command benchmark of spritequeue beside raw arq, on one embedded Valkey (see --help)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import redis.asyncio as aioredis
from _harness import (
    FINAL,
    LOCALHOST,
    Children,
    HttpPool,
    Profiler,
    Watcher,
    at_rate,
    cpu_seconds,
    drain_rate,
    flood,
    hot_spots,
    latency_summary,
    machine,
    memory_kib,
    peak_concurrency,
    raise_on_sigterm,
    redis_commands,
    wait_answering,
)

from backend.cache import CachedImage, RedisL1
from backend.config import JobSettings, Settings, WorkerSettings
from backend.embedded_redis import EmbeddedRedis, free_port
from backend.logs import configure_logging
from backend.models import SpriteRequest
from backend.normalize import cache_key, canonical_fields
from backend.store import keys
from backend.store.tokens import TokenStore
from fixtures.stack import MOCK_API_KEY, test_settings
from mocks.png import sprite_png

USAGE = """\
    .venv/bin/python load/benchmark.py                   # the full run, 2-4 minutes
    .venv/bin/python load/benchmark.py --smoke           # seconds, tiny sizes, for CI
    .venv/bin/python load/benchmark.py --json out.json --profile prof/

Parts, in one run on one Valkey (flushed between parts), everything on 127.0.0.1:
  1 raw arq: a no-op job on a plain arq Worker with our poll_delay and max_jobs; then a
    bare arq task doing the same work as ours (one httpx call to the mock, one SET of the
    PNG): the drain baseline
  2 spritequeue, mock PixelLab at 0 ms: HTTP submit -> `completed` event (pub/sub)
  3 the same with 500 jobs whose PixelLab call takes 5 s, on one worker process
  4 cache-hit submits
"""

RAW_QUEUE = "bench:arq:queue"
RAW_DONE = "bench:arq:done"  # the no-op job publishes its id here: "done" for the timer
USERS = 50
IMAGE = {"width": 64, "height": 64}
ENDINGS = ("completed", "failed", "cancelled")  # spritequeue's final events


@dataclass(frozen=True)
class Sizes:
    drain_jobs: int  # jobs queued before the worker starts (parts 1a and 2)
    rate: float  # jobs/s of the latency runs (parts 1b, 2 and 4)
    low_rate: float  # a second, lighter latency run (parts 1b and 2): the path without a backlog
    latency_s: float  # length of each latency run
    slow_jobs: int  # part 3
    slow_ms: int  # PixelLab latency of part 3's jobs
    concurrency: int  # requests in flight while flooding the API
    timeout_s: float  # give up waiting for a phase's jobs after this long


FULL = Sizes(3000, 200, 20, 5, 500, 5000, 16, 120)
SMOKE = Sizes(60, 50, 20, 1, 20, 500, 8, 30)


# ---- the child roles: a plain arq worker, the mock PixelLab ---------------------------------


async def noop(ctx: dict[str, Any], number: int) -> None:
    await ctx["redis"].publish(RAW_DONE, ctx["job_id"])


async def same_work(ctx: dict[str, Any], number: int) -> None:
    """What our job does for its result, bare: one call to the PixelLab stand-in, one SET."""
    answer = await ctx["http"].post(
        "/v1/generate-image-pixflux",
        json={"description": f"bare {number}", "image_size": IMAGE},
        headers={"Authorization": f"Bearer {MOCK_API_KEY}"},
    )
    png = base64.b64decode(answer.json()["image"]["base64"])
    await ctx["redis"].set(f"bench:arq:png:{number}", png, ex=600)
    await ctx["redis"].publish(RAW_DONE, ctx["job_id"])


def run_raw_worker(
    redis_url: str, poll_delay_s: float, max_jobs: int, mock_url: str | None = None
) -> None:
    import httpx
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    async def startup(ctx: dict[str, Any]) -> None:
        if mock_url:
            limits = httpx.Limits(max_connections=max_jobs)
            ctx["http"] = httpx.AsyncClient(base_url=mock_url, limits=limits, timeout=60)

    # Plain arq defaults except what we set for ours too: poll_delay, max_jobs and no result
    # kept (ours keeps none), so arq's own bookkeeping is the same on both sides.
    Worker(
        functions=[func(noop, name="noop"), func(same_work, name="same_work")],
        on_startup=startup,
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=RAW_QUEUE,
        poll_delay=poll_delay_s,
        max_jobs=max_jobs,
        keep_result=0,
    ).run()


def run_mock(port: int) -> None:
    import uvicorn

    from mocks.pixellab import create_mock_app

    # The CLI's mock logs every request; here it shares two cores with what is measured, so
    # it keeps quiet. Latency comes per request from a [mock-latency:MS] marker.
    app = create_mock_app(api_key=MOCK_API_KEY)
    uvicorn.run(
        app,
        host=LOCALHOST,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )


# ---- watching completions ------------------------------------------------------------------


def parse_raw(data: bytes) -> tuple[str, str] | None:
    return "completed", data.decode()


def parse_event(data: bytes) -> tuple[str, str] | None:
    """``sq:events`` messages, "<job_id> <stream_id> <event> <json>" -> (event, job id).

    Of the progress events "queued", "started" (part 3 counts jobs running at once) and
    "received" are kept, for the 20/s run's breakdown (``SPANS``).
    Completions are timed here, on Redis pub/sub, not on one SSE stream per job: what is
    measured is the queue, not the SSE fan-out (``bench_sse.py`` measures that).
    """
    job_id, _, event, payload = data.split(b" ", 3)
    if event == b"progress":
        for stage in PROGRESS_STAGES:
            if b'"stage":"%s"' % stage.encode() in payload:
                return stage, job_id.decode()
        return None
    return event.decode(), job_id.decode()


# The 20/s run's time, split where the job's events are stamped: (name, from, to). "sent"
# and "answered" are the client's request and its HTTP answer; the rest are events.
# The admission's `queued`, the start's `started` (5 %), `received` (90 %: the image kept).
PROGRESS_STAGES = ("queued", "started", "received")
SPANS = (
    ("HTTP submit, answered", "sent", "answered"),
    ("submit -> `queued` event", "sent", "queued"),
    ("pickup: `queued` -> started", "queued", "started"),
    ("cache look, PixelLab call, cache write", "started", "received"),
    ("landing: stage 90 -> `completed`", "received", "completed"),
)


# ---- the benchmark -------------------------------------------------------------------------


class Benchmark:
    def __init__(
        self, args: argparse.Namespace, sizes: Sizes, redis_url: str, children: Children
    ) -> None:
        self.args = args
        self.sizes = sizes
        self.redis_url = redis_url
        self.children = children
        self.redis = aioredis.Redis.from_url(redis_url)
        self.profiler = Profiler(children, args.profile)
        self.run_tag = uuid.uuid4().hex[:8]
        self.errors: collections.Counter[str] = collections.Counter()
        self.settings: Settings | None = None
        self.answered: dict[str, float] = {}  # job id -> when its HTTP submit was answered

    def stack_settings(self, mock_url: str) -> Settings:
        """Our defaults (worker, jobs) with the caps lifted: no submission may be refused."""
        worker = WorkerSettings().model_dump()
        worker.update(poll_delay_s=self.args.poll_delay, max_jobs=self.args.max_jobs)
        overrides: dict[str, Any] = {
            "worker": worker,
            "jobs": JobSettings().model_dump(),
            "log_level": self.args.log_level,
            "limits": {"queue_capacity": 1_000_000, "per_user": 1_000_000, "warning_at": 1_000_000},
            # The queue is measured, not the call cap (load/bench_upstream.py measures that).
            "pixellab": {"max_concurrency": self.args.max_jobs},
        }
        for item in self.args.set:  # "section.field=value", for tuning runs
            name, _, value = item.partition("=")
            section, _, field = name.partition(".")
            overrides.setdefault(section, {})[field] = value
        return test_settings(self.redis_url, mock_url, **overrides)

    async def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        parts = self.args.parts
        try:
            if "1" in parts:
                results["raw"] = await self.raw_arq()
            if parts.strip("1"):
                results.update(await self.stack_parts(parts))
        finally:
            await self.redis.aclose()
        results["errors"] = dict(self.errors)
        return results

    async def stack_parts(self, parts: str) -> dict[str, Any]:
        await self.redis.flushall()
        mock_port, api_port = free_port(), free_port()
        self.children.start(
            "mock", [sys.executable, __file__, "--role", "mock", "--port", str(mock_port)]
        )
        self.settings = self.stack_settings(f"http://{LOCALHOST}:{mock_port}")
        api = self.children.cli("api", ["api", "--port", str(api_port)], self.settings)
        await wait_answering(mock_port, "/_mock/stats")
        await wait_answering(api_port, "/health/live")
        http = HttpPool(api_port, self.sizes.concurrency)
        watcher = Watcher(self.redis_url, keys.EVENTS_CHANNEL, parse_event, endings=ENDINGS)
        await watcher.start()
        results: dict[str, Any] = {}
        try:
            if "2" in parts:
                results["full"] = await self.full_path(http, watcher, api.pid)
            if "3" in parts:
                results["slow"] = await self.slow_jobs(http, watcher)
            if "4" in parts:
                results["cache"] = await self.cache_hits(http)
        finally:
            http.close()
            await watcher.close()
        return results

    # -- part 1 --------------------------------------------------------------------------

    async def raw_arq(self) -> dict[str, Any]:
        from arq.connections import RedisSettings, create_pool

        sizes, out = self.sizes, {}
        pool = await create_pool(RedisSettings.from_dsn(self.redis_url))
        watcher = Watcher(self.redis_url, RAW_DONE, parse_raw, endings=["completed"])
        await watcher.start()
        submit = self._raw_submitter(pool)
        try:
            worker = await self._start_worker(raw=True)
            out["latency_low"] = await self._latency(watcher, submit, low=True)
            self.children.stop(worker)

            async def enqueue(index: int) -> None:
                await pool.enqueue_job("noop", index, _job_id=f"d{index}", _queue_name=RAW_QUEUE)

            watcher.reset()
            commands_before = await redis_commands(self.redis)
            elapsed = await flood(sizes.drain_jobs, sizes.concurrency, enqueue)
            commands = await redis_commands(self.redis) - commands_before - 1
            out["enqueue_per_s"] = sizes.drain_jobs / elapsed
            out["redis_commands_per_submit"] = commands / sizes.drain_jobs
            worker = await self._start_worker(raw=True, wait=False)
            out.update(
                await self._drain(watcher, worker.pid, [f"d{i}" for i in range(sizes.drain_jobs)])
            )
            out["latency"] = await self._latency(watcher, submit)
            self.children.stop(worker)
            out["same_work"] = await self._raw_same_work(pool, watcher)
        finally:
            await watcher.close()
            await pool.aclose()
        return out

    async def _raw_same_work(self, pool: Any, watcher: Watcher) -> dict[str, Any]:
        """The drain baseline: bare arq doing our job's work, against its own mock."""
        port = free_port()
        mock = self.children.start(
            "raw-mock", [sys.executable, __file__, "--role", "mock", "--port", str(port)]
        )
        await wait_answering(port, "/_mock/stats")
        try:

            async def enqueue(index: int) -> None:
                await pool.enqueue_job(
                    "same_work", index, _job_id=f"w{index}", _queue_name=RAW_QUEUE
                )

            watcher.reset()
            await flood(self.sizes.drain_jobs, self.sizes.concurrency, enqueue)
            worker = await self._start_worker(raw=True, wait=False, mock_port=port)
            ids = [f"w{i}" for i in range(self.sizes.drain_jobs)]
            drained = await self._drain(watcher, worker.pid, ids)
            self.children.stop(worker)
        finally:
            self.children.stop(mock)
        return drained

    async def _start_worker(
        self, *, raw: bool = False, wait: bool = True, mock_port: int | None = None
    ) -> Popen[bytes]:
        """A worker process (plain arq, or ours); with ``wait``, once it polls the queue."""
        # arq records its health on its first poll; ours also heartbeats in on_startup.
        ready_key = f"{RAW_QUEUE}:health-check" if raw else keys.WORKERS
        await self.redis.delete(ready_key)
        if raw:
            argv = [sys.executable, __file__, "--role", "raw-worker", "--redis-url", self.redis_url]
            argv += [
                "--poll-delay",
                str(self.args.poll_delay),
                "--max-jobs",
                str(self.args.max_jobs),
            ]
            if mock_port is not None:
                argv += ["--mock-url", f"http://{LOCALHOST}:{mock_port}"]
            worker = self.children.start("raw-arq-worker", argv)
        else:
            assert self.settings is not None
            worker = self.children.cli("worker", ["worker", "--metrics-port", "0"], self.settings)
        deadline = time.monotonic() + 60
        while wait and not await self.redis.exists(ready_key):
            self.children.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not start within 60 s")
            await asyncio.sleep(0.05)
        return worker

    def _raw_submitter(self, pool: Any) -> Callable[[int], Any]:
        async def submit(index: int) -> tuple[str, float] | None:
            job_id, began = f"l{index}", time.perf_counter()
            await pool.enqueue_job("noop", index, _job_id=job_id, _queue_name=RAW_QUEUE)
            return job_id, began

        return submit

    async def _drain(
        self, watcher: Watcher, pid: int, ids: list[str], profile: str | None = None
    ) -> dict[str, Any]:
        """Time a starting worker through the queued jobs; CPU per job after its first one.

        The watcher must have been reset before the jobs were queued.
        """
        total = len(ids)
        if not await watcher.wait(FINAL, 1, 60):
            self.children.check_alive()
            raise TimeoutError("the worker finished no job within 60 s")
        spy = self.profiler.start(profile, pid) if profile else None
        commands_before = await redis_commands(self.redis)
        cpu_before, ended_before = cpu_seconds(pid), len(watcher.stamps[FINAL])
        ended = await watcher.wait(FINAL, total, self.sizes.timeout_s)
        cpu_used = cpu_seconds(pid) - cpu_before
        jobs = len(watcher.stamps[FINAL]) - ended_before
        commands = await redis_commands(self.redis) - commands_before - 1
        self.profiler.stop(spy)
        done = watcher.stamps["completed"]
        if not ended or len(done) < total:
            await self._unfinished("drain", ids, done)
        return {
            "drain_per_s": drain_rate(done),
            "worker_cpu_ms_per_job": 1000 * cpu_used / max(jobs, 1),
            "redis_commands_per_job": commands / max(jobs, 1),
            "drained": len(done),
        }

    async def _unfinished(self, phase: str, ids: list[str], done: dict[str, float]) -> None:
        """Record jobs that did not complete (failed, or still running at the timeout)."""
        missing = [job_id for job_id in ids if job_id not in done]
        states: collections.Counter[str] = collections.Counter()
        for job_id in missing:
            status, stage = await self.redis.hmget(keys.job(job_id), ["status", "stage"])
            states[f"{(status or b'-').decode()}/{(stage or b'-').decode()}"] += 1
        where = ", ".join(f"{n} {state}" for state, n in states.most_common())
        self.errors[f"{phase}: {len(missing)} of {len(ids)} jobs unfinished ({where})"] += 1
        print(f"!! {phase}: unfinished {missing[:10]}", file=sys.stderr)

    async def _latency(
        self, watcher: Watcher, submit: Callable[[int], Any], *, low: bool = False
    ) -> dict[str, Any]:
        """Submit at a fixed rate (open loop); each job's submit -> completed time."""
        watcher.reset()
        rate = self.sizes.low_rate if low else self.sizes.rate
        sent: dict[str, float] = {}

        async def timed(index: int) -> None:
            answer = await submit(index)
            if answer is not None:
                sent[answer[0]] = answer[1]

        count = max(int(rate * self.sizes.latency_s), 1)
        lag = await at_rate(count, rate, timed)
        await watcher.wait(FINAL, sent, self.sizes.timeout_s)
        done = watcher.stamps["completed"]
        if any(job_id not in done for job_id in sent):
            await self._unfinished(f"latency run at {rate:g}/s", list(sent), done)
        out: dict[str, Any] = latency_summary([done[j] - t for j, t in sent.items() if j in done])
        out["rate"] = rate
        out["generator_lag_ms"] = lag * 1000
        if low:
            out["spans_p50_ms"] = self._spans(sent, watcher)
        return out

    def _spans(self, sent: dict[str, float], watcher: Watcher) -> dict[str, float]:
        """The median of each of ``SPANS`` over the jobs that have both ends (none for raw
        arq, which has no such events)."""
        marks = {"sent": sent, "answered": self.answered, **watcher.stamps}
        medians = {}
        for name, start, end in SPANS:
            begin, finish = marks.get(start, {}), marks.get(end, {})
            spans = [finish[j] - begin[j] for j in sent if j in begin and j in finish]
            if spans:
                medians[name] = 1000 * statistics.median(spans)
        return medians

    # -- part 2 --------------------------------------------------------------------------

    async def _tokens(self) -> list[dict[str, str]]:
        store = TokenStore(self.redis)
        headers = []
        for number in range(USERS):
            token = await store.create(f"bench-{number}")
            headers.append({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return headers

    def _http_submitter(
        self, http: HttpPool, users: list[dict[str, str]], label: str, suffix: str = ""
    ) -> Callable[[int], Any]:
        async def submit(index: int) -> tuple[str, float] | None:
            body = json.dumps(
                {
                    "description": f"bench {self.run_tag} {label} {index}{suffix}",
                    "image_size": IMAGE,
                }
            ).encode()
            began = time.perf_counter()
            status, reply = await http.request("POST", "/v1/jobs", body, users[index % USERS])
            answered = time.perf_counter()
            if status != 202:
                self.errors[f"{label}: POST /v1/jobs answered {status}"] += 1
                return None
            job_id = str(json.loads(reply)["job_id"])
            self.answered[job_id] = answered
            return job_id, began

        return submit

    async def full_path(self, http: HttpPool, watcher: Watcher, api_pid: int) -> dict[str, Any]:
        users, out = await self._tokens(), {}
        out["work_alone"] = await self._work_alone()
        out["round_trip_ms"] = await self._round_trip_after_idle()
        # The light run first, on a fresh idle worker: nothing left over from the drain.
        worker = await self._start_worker()
        low = self._http_submitter(http, users, "low")
        out["latency_low"] = await self._latency(watcher, low, low=True)
        self.children.stop(worker)

        submit = self._http_submitter(http, users, "drain")

        queued: list[str] = []

        async def queue_one(index: int) -> None:
            if answer := await submit(index):
                queued.append(answer[0])

        watcher.reset()
        spy = self.profiler.start("api", api_pid)
        cpu_before = cpu_seconds(api_pid)
        commands_before = await redis_commands(self.redis)
        elapsed = await flood(self.sizes.drain_jobs, self.sizes.concurrency, queue_one)
        commands = await redis_commands(self.redis) - commands_before - 1
        cpu_used = cpu_seconds(api_pid) - cpu_before
        out["redis_commands_per_submit"] = commands / self.sizes.drain_jobs
        self.profiler.stop(spy)
        out["submit_per_s"] = self.sizes.drain_jobs / elapsed
        out["api_cpu_ms_per_submit"] = 1000 * cpu_used / self.sizes.drain_jobs
        worker = await self._start_worker(wait=False)
        out.update(await self._drain(watcher, worker.pid, queued, profile="worker"))
        # The 200/s run on two worker processes (the figure for a busy queue).
        second = await self._start_worker()
        out["latency"] = await self._latency(watcher, self._http_submitter(http, users, "rate"))
        self.children.check_alive()
        self.children.stop(second)
        self.children.stop(worker)
        return out

    async def _work_alone(self) -> dict[str, Any]:
        """The floor under the 20/s run: the work of a job with no queue around it (one call
        to the mock, its PNG decoded and SET, as the bare arq task does), from this process at
        the same rate, one at a time."""
        import httpx

        assert self.settings is not None
        times: list[float] = []
        async with httpx.AsyncClient(base_url=self.settings.pixellab.base_url) as client:

            async def once(index: int) -> None:
                began = time.perf_counter()
                await same_work({"http": client, "redis": self.redis, "job_id": ""}, index)
                times.append(time.perf_counter() - began)

            count = max(int(self.sizes.low_rate * self.sizes.latency_s), 1)
            await at_rate(count, self.sizes.low_rate, once)
        return latency_summary(times)

    async def _round_trip_after_idle(self) -> dict[str, float]:
        """A Redis PING's and an HTTP GET's (the mock's balance) median time 50 ms after the
        last one (as at 20 jobs/s, where every process sleeps between jobs) and right after
        another: what a wake-up costs here, on a short exchange and on a Python one."""
        import httpx

        assert self.settings is not None
        times: dict[str, list[float]] = {"idle": [], "hot": [], "http_idle": [], "http_hot": []}
        headers = {"Authorization": f"Bearer {MOCK_API_KEY}"}
        async with httpx.AsyncClient(base_url=self.settings.pixellab.base_url) as client:
            for _ in range(max(int(self.sizes.low_rate * self.sizes.latency_s), 1)):
                for name, exchange in (
                    ("", self.redis.ping),
                    ("http_", lambda: client.get("/balance", headers=headers)),
                ):
                    await asyncio.sleep(0.05)
                    began = time.perf_counter()
                    await exchange()
                    woken = time.perf_counter()
                    await exchange()
                    times[name + "idle"].append(woken - began)
                    times[name + "hot"].append(time.perf_counter() - woken)
        return {name: 1000 * statistics.median(values) for name, values in times.items()}

    # -- part 3 --------------------------------------------------------------------------

    async def slow_jobs(self, http: HttpPool, watcher: Watcher) -> dict[str, Any]:
        assert self.settings is not None
        await self.redis.flushall()
        users, sizes = await self._tokens(), self.sizes
        worker = await self._start_worker()
        # Idle for a while: past start-up work, and what polling costs when there is nothing.
        idle_cpu, idle_s = cpu_seconds(worker.pid), 2.0
        await asyncio.sleep(idle_s)
        watcher.reset()
        idle = memory_kib(worker.pid)
        cpu_before = cpu_seconds(worker.pid)
        idle_pct = 100 * (cpu_before - idle_cpu) / idle_s
        submit = self._http_submitter(http, users, "slow", f" [mock-latency:{sizes.slow_ms}]")
        sent: dict[str, float] = {}

        async def timed(index: int) -> None:
            answer = await submit(index)
            if answer is not None:
                sent[answer[0]] = answer[1]

        began = time.perf_counter()
        submit_s = await flood(sizes.slow_jobs, sizes.concurrency, timed)
        await watcher.wait(FINAL, sent, sizes.timeout_s)
        cpu_used = cpu_seconds(worker.pid) - cpu_before
        memory = memory_kib(worker.pid)
        self.children.stop(worker)
        done, started = watcher.stamps["completed"], watcher.stamps["started"]
        if len(done) < len(sent):
            await self._unfinished("slow", list(sent), done)
        finish = max(done.values(), default=began)
        return {
            "jobs": sizes.slow_jobs,
            "done": len(done),
            "pixellab_s": sizes.slow_ms / 1000,
            "submit_window_s": submit_s,
            "makespan_s": finish - began,
            "after_last_submit_s": finish - (began + submit_s),
            "peak_running": peak_concurrency(started, done),
            "latency": latency_summary([done[j] - t for j, t in sent.items() if j in done]),
            "worker_cpu_s": cpu_used,
            "worker_idle_cpu_pct": idle_pct,
            "worker_cpu_pct_of_core": 100 * cpu_used / max(finish - began, 1e-9),
            "worker_rss_idle_mib": idle["VmRSS"] / 1024,
            "worker_rss_end_mib": memory["VmRSS"] / 1024,
            "worker_rss_peak_mib": memory["VmHWM"] / 1024,
        }

    # -- part 4 --------------------------------------------------------------------------

    async def cache_hits(self, http: HttpPool) -> dict[str, Any]:
        assert self.settings is not None
        await self.redis.flushall()
        users = await self._tokens()
        count = max(int(self.sizes.rate * self.sizes.latency_s), 1)
        l1 = RedisL1(self.redis, ttl_s=self.settings.cache.l1_ttl_s)
        bodies = []
        for index in range(count):
            fields = {"description": f"cached {self.run_tag} {index}", "image_size": IMAGE}
            request = SpriteRequest.model_validate(fields)
            key = cache_key(request)
            png = sprite_png(IMAGE["width"], IMAGE["height"], key.encode())
            await l1.put(
                CachedImage.new(
                    key,
                    png,
                    width=IMAGE["width"],
                    height=IMAGE["height"],
                    request=canonical_fields(request),
                )
            )
            bodies.append(json.dumps(fields).encode())
        took: list[float] = []

        async def timed(index: int) -> None:
            began = time.perf_counter()
            status, _ = await http.request("POST", "/v1/jobs", bodies[index], users[index % USERS])
            if status != 200:
                self.errors[f"cache: POST /v1/jobs answered {status}, not 200"] += 1
                return
            took.append(time.perf_counter() - began)

        lag = await at_rate(count, self.sizes.rate, timed)
        return {**latency_summary(took), "rate": self.sizes.rate, "generator_lag_ms": lag * 1000}


# ---- the table -----------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: float
    raw_arq: float | None = None
    target: str = ""
    met: bool | None = None  # None: no target
    unit: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.raw_arq or math.isnan(self.raw_arq) or math.isnan(self.value):
            return None
        return self.value / self.raw_arq


def rows(results: dict[str, Any], sizes: Sizes) -> list[Row]:
    """The table: each figure beside raw arq's where one is comparable, and its target."""
    raw, full = results.get("raw", {}), results.get("full")
    slow, cache = results.get("slow"), results.get("cache")
    table: list[Row] = []
    if full:
        same = raw.get("same_work", {})
        drain, base = full["drain_per_s"], same.get("drain_per_s")
        met = drain >= 0.6 * base if base else None
        table.append(Row("drain, one worker process", drain, base,
                         ">= 60 % of bare arq, same work", met, "jobs/s"))  # fmt: skip
        table.append(Row("  (raw arq, a no-op job)", raw.get("drain_per_s", math.nan),
                         unit="jobs/s"))  # fmt: skip
        cpu, base = full["worker_cpu_ms_per_job"], same.get("worker_cpu_ms_per_job")
        table.append(Row("worker CPU per job", cpu, base, unit="ms"))
        # (p50, p99) targets: 20/s on one worker, 200/s on two.
        targets = {"latency_low": {"p50": 5, "p99": 25}, "latency": {"p99": 50}}
        for run in ("latency_low", "latency"):
            ours, theirs = full[run], raw.get(run, {})
            workers = "two workers" if run == "latency" else "one worker"
            for q in ("p50", "p95", "p99") if run == "latency" else ("p50", "p99"):
                value, limit = ours[f"{q}_ms"], targets[run].get(q)
                name = f"submit -> completed {q} @ {ours['rate']:g}/s, {workers}"
                target, met = (f"<= {limit} ms", value <= limit) if limit else ("", None)
                table.append(Row(name, value, theirs.get(f"{q}_ms"), target, met, "ms"))
        rate = full["submit_per_s"]
        table.append(Row(f"submits/s, one API process ({sizes.concurrency} in flight)", rate,
                         raw.get("enqueue_per_s"), ">= 1,000/s", rate >= 1000, "/s"))  # fmt: skip
        table.append(Row("API CPU per submit", full["api_cpu_ms_per_submit"], unit="ms"))
        # Redis's own count, a script's calls included, from every process (the API's
        # position announcer too): what Redis works through, where load/bench_roundtrips.py
        # counts what crosses the wire.
        table.append(Row("Redis commands per cache-miss submit", full["redis_commands_per_submit"],
                         raw.get("redis_commands_per_submit"), unit="cmds"))  # fmt: skip
        table.append(Row("Redis commands per job, drain", full["redis_commands_per_job"],
                         same.get("redis_commands_per_job"), unit="cmds"))  # fmt: skip
    if slow:
        jobs, pixellab_s = slow["jobs"], slow["pixellab_s"]
        ideal = slow["submit_window_s"] + pixellab_s
        # One round of PixelLab calls: any job queued behind a full pool needs a second one.
        met = slow["after_last_submit_s"] < 1.5 * pixellab_s and slow["done"] == jobs
        table += [
            Row(f"{jobs} jobs of {pixellab_s:g} s: first submit -> all done", slow["makespan_s"],
                None, f"~{ideal:.1f} s: all concurrent on 1 worker", met, "s"),
            Row(f"{jobs} slow jobs: peak running at once", slow["peak_running"], unit="jobs"),
            Row(f"{jobs} slow jobs: submit -> completed p99", slow["latency"]["p99_ms"],
                unit="ms"),
            Row("  worker CPU over that run", slow["worker_cpu_s"], unit="s"),
            Row("  worker CPU when idle (polling)", slow["worker_idle_cpu_pct"], unit="%"),
            Row("  worker RSS peak (VmHWM)", slow["worker_rss_peak_mib"], unit="MiB"),
        ]  # fmt: skip
    if cache:
        table.append(Row("cache-hit submit p50", cache["p50_ms"], unit="ms"))
        p99 = cache["p99_ms"]
        table.append(Row("cache-hit submit p99", p99, None, "<= 5 ms", p99 <= 5, "ms"))
    return table


def _number(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("jobs/s", "/s", "jobs"):
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"


def print_report(results: dict[str, Any], table: list[Row], smoke: bool) -> None:
    info, conf = results["machine"], results["config"]
    print(
        f"\nspritequeue benchmark, {info['date']}; {info['nproc']} x {info['cpu']}, "
        f"Python {info['python']}, load avg {info['load_avg_1m']} at start"
        f"{'; SMOKE sizes: figures mean nothing' if smoke else ''}"
    )
    print(
        f"worker: poll_delay {conf['poll_delay_s']:g} s, max_jobs {conf['max_jobs']}; "
        f"log level {conf['log_level']}; drain N = {conf['drain_jobs']}\n"
    )
    head = f"{'figure':<46}{'spritequeue':>13}{'raw arq':>10}{'ratio':>8}  {'target':<40}met"
    print(head)
    print("-" * len(head))
    for row in table:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        met = {True: "yes", False: "NO", None: ""}[row.met]
        value = _number(row.value, row.unit) + (f" {row.unit}" if row.unit else "")
        print(
            f"{row.figure:<46}{value:>13}{_number(row.raw_arq, row.unit):>10}{ratio:>8}"
            f"  {row.target:<40}{met}"
        )
    print()
    if full := results.get("full"):
        print(
            f"latency run: {full['latency']['n']} jobs at {full['latency']['rate']:g}/s, worst "
            f"generator lag {full['latency']['generator_lag_ms']:.1f} ms."
        )
        low = full["latency_low"]
        if spans := low.get("spans_p50_ms"):
            print(f"where the {low['rate']:g}/s run's time goes (medians, each on its own):")
            for name, value in spans.items():
                print(f"  {name:<42}{value:6.2f} ms")
            alone = full["work_alone"]["p50_ms"]
            print(f"  {'(the same work with no queue around it)':<42}{alone:6.2f} ms")
            trip = full["round_trip_ms"]
            print(f"  (a Redis round trip: {trip['idle']:.2f} ms after 50 ms idle, "
                  f"{trip['hot']:.2f} ms right after another; an HTTP GET of the mock: "
                  f"{trip['http_idle']:.2f} and {trip['http_hot']:.2f} ms)")  # fmt: skip
    if slow := results.get("slow"):
        print(
            f"slow run: {slow['done']}/{slow['jobs']} done; submitted in "
            f"{slow['submit_window_s']:.2f} s; worker CPU {slow['worker_cpu_pct_of_core']:.0f} % "
            f"of one core; RSS idle {slow['worker_rss_idle_mib']:.0f} MiB, end "
            f"{slow['worker_rss_end_mib']:.0f} MiB."
        )
    print("'completed' is timed on Redis pub/sub (sq:events), not through SSE.")
    for error, count in results["errors"].items():
        print(f"!! {error} (x{count})")


def print_profiles(outputs: dict[str, Path]) -> None:
    for name, path in outputs.items():
        if not path.exists():
            print(f"\nprofile {name}: py-spy wrote nothing ({path})")
            continue
        print(f"\nprofile {name} (py-spy, on-CPU samples; {path}):")
        ours = hot_spots(path, 15, within="backend/")  # less the CLI's entry frames, below
        for title, spots in (
            ("busiest functions, by self time", hot_spots(path)),
            ("our code, by total time", [s for s in ours if "cli.py" not in s[0]][:12]),
        ):
            print(f"  {title}\n  {'self %':>7} {'total %':>8}  function")
            for function, own, total in spots:
                print(f"  {own:7.1f} {total:8.1f}  {function}")


def run_all(args: argparse.Namespace, sizes: Sizes) -> tuple[dict[str, Any], dict[str, Path]]:
    """The whole benchmark; everything it started is stopped when it returns or raises."""
    with (
        tempfile.TemporaryDirectory(prefix="sq-bench-") as tmp,
        EmbeddedRedis(Path(tmp) / "valkey", appendonly=False) as server,
        Children(args.logs or Path(tmp)) as children,
    ):
        bench = Benchmark(args, sizes, server.url, children)
        try:
            return asyncio.run(bench.run()), bench.profiler.outputs
        except Exception:
            for name in ("api", "worker", "raw-arq-worker", "mock"):
                if tail := children.log_tail(name, 1500):
                    print(f"--- {name} log (end) ---\n{tail}", file=sys.stderr)
            raise


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = WorkerSettings()
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; for CI")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--profile", type=Path, help="py-spy the API and worker into this dir")
    parser.add_argument(
        "--poll-delay",
        type=float,
        default=defaults.poll_delay_s,
        help="both workers' poll_delay (default: ours)",
    )
    parser.add_argument(
        "--max-jobs",
        type=int,
        default=defaults.max_jobs,
        help="both workers' max_jobs (default: ours)",
    )
    parser.add_argument("--log-level", default=Settings.model_fields["log_level"].default)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one of our settings, e.g. pixellab.max_connections=500",
    )
    parser.add_argument("--drain-jobs", type=int, help="jobs per drain (default 3000)")
    parser.add_argument("--parts", default="1234", help="which parts to run (default: all)")
    parser.add_argument("--logs", type=Path, help="keep the child processes' logs in this dir")
    parser.add_argument("--role", choices=["raw-worker", "mock"], help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mock-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "raw-worker":
        run_raw_worker(args.redis_url, args.poll_delay, args.max_jobs, args.mock_url)
        return 0
    if args.role == "mock":
        run_mock(args.port)
        return 0

    if args.profile and not Profiler.available():
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    raise_on_sigterm()
    configure_logging("WARNING")
    sizes = SMOKE if args.smoke else FULL
    if args.drain_jobs:
        sizes = dataclasses.replace(sizes, drain_jobs=args.drain_jobs)
    for folder in (args.profile, args.logs):
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    info = machine()
    began = time.monotonic()
    try:
        results, outputs = run_all(args, sizes)
    except KeyboardInterrupt:
        print("\ninterrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    results["machine"] = info
    results["config"] = {
        "poll_delay_s": args.poll_delay,
        "max_jobs": args.max_jobs,
        "log_level": args.log_level,
        "drain_jobs": sizes.drain_jobs,
        "smoke": args.smoke,
        "duration_s": time.monotonic() - began,
    }
    table = rows(results, sizes)
    print_report(results, table, args.smoke)
    print_profiles(outputs)
    print(f"\n(took {results['config']['duration_s']:.0f} s)")
    if args.json:
        rows_out = [{**dataclasses.asdict(row), "ratio": row.ratio} for row in table]
        args.json.write_text(json.dumps({**results, "table": rows_out}, indent=2, default=str))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
