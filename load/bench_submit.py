"""Benchmark: ``POST /v1/jobs`` on ONE API process beside a bare arq enqueue, in the same run.

    .venv/bin/python load/bench_submit.py            # about a minute on 2 cores
    .venv/bin/python load/bench_submit.py --smoke    # a few seconds, for CI

An embedded Valkey and one ``spritequeue api`` child process (uvicorn, as deployed); no
worker, so every admitted job stays queued and each submission does the full admission
(token, L1 look-up, the admit script, which also places the job). Caps are raised so every
submission is admitted; requests are spread over many users and are all distinct (no dedup).

Each operation is run by the same client loop: ``--concurrency`` coroutines in this
process, ``--ops`` operations per round, latency measured around each awaited call,
throughput as operations over wall time. The rounds interleave the operations, so drift on a
shared machine hits them alike; figures pool all rounds after a warm-up. Rows:
- bare arq: ``ArqRedis.enqueue_job`` of a no-op function (arq's own WATCH/MULTI enqueue);
- HTTP floor: ``GET /health/live`` on the same API, the cost of HTTP and the client alone;
- submit, cache miss: a new request, admitted and queued (``202``);
- submit, cache hit: a request whose sprite is already in L1 (``200``, nothing queued).
CPU per operation is read for the API process and this client process (psutil) and for
Redis (``INFO cpu``): the client's share shows when it, not the server, sets the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings, create_pool

from backend.cache import CachedImage, RedisL1
from backend.embedded_redis import EmbeddedRedis, free_port
from backend.models import SpriteRequest
from backend.normalize import cache_key, canonical_fields
from backend.queue.serializer import deserialize, serialize
from backend.store.tokens import TokenStore
from fixtures.factories import sprite_request
from fixtures.stack import settings_env, stop_process, test_settings, wait_http
from mocks.png import sprite_png

LOCALHOST = "127.0.0.1"
ARQ_QUEUE = "bench:arq"  # apart from the service's queue, so the two never mix
Op = Callable[[int], Awaitable[bool]]  # True when the answer was the expected one
# Idle connections are reopened well before uvicorn's 5 s keep-alive timeout, so none is
# reused just as the server closes it (a lost request, not a slow one).
IDLE_REOPEN_S = 1.0


class RawHttp:
    """HTTP/1.1 keep-alive connections with just the parsing these requests need.

    httpx spends a few milliseconds of CPU per request, more than the API under test does, so
    with it this benchmark would measure its own client. Each request takes an idle
    connection, writes the request, reads the status line, headers and a
    ``content-length`` body (what uvicorn sends for these routes), and gives it back.
    """

    def __init__(self, host: str, port: int, size: int) -> None:
        self._host, self._port = host, port
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]
        self._idle = asyncio.Queue()
        self._size = size

    async def open(self) -> None:
        for _ in range(self._size):
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._idle.put_nowait((reader, writer, time.monotonic()))

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer, _ = self._idle.get_nowait()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def request(
        self, method: str, path: str, *, body: Any = None, token: str | None = None
    ) -> tuple[int, bytes]:
        """(status, body); raises OSError or IncompleteReadError when the connection fails."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nhost: {self._host}:{self._port}\r\n"
        if token is not None:
            head += f"authorization: Bearer {token}\r\n"
        if body is not None:
            head += f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
        reader, writer, last_used = await self._idle.get()
        ok = False
        try:
            if time.monotonic() - last_used > IDLE_REOPEN_S:
                writer.close()
                reader, writer = await asyncio.open_connection(self._host, self._port)
            writer.write(head.encode() + b"\r\n" + payload)
            header = await reader.readuntil(b"\r\n\r\n")
            status = int(header[9:12])
            length = 0
            for line in header.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            content = await reader.readexactly(length)
            ok = True
            return status, content
        finally:
            if not ok:
                writer.close()  # in an unknown state: the next user opens a fresh one
            self._idle.put_nowait((reader, writer, time.monotonic() if ok else -math.inf))


@dataclass
class Row:
    name: str
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: int = 0  # transport errors and unexpected answers, left out of the latencies
    api_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    redis_calls: int = 0

    @property
    def ops(self) -> int:
        return len(self.latencies_s) + self.errors

    @property
    def rate(self) -> float:
        """Expected answers per second."""
        return len(self.latencies_s) / self.wall_s if self.wall_s else float("nan")

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def redis_cpu_s(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def redis_calls(client: aioredis.Redis) -> int:
    """Commands Redis has run so far (scripts count as one, plus the calls they make)."""
    stats = await client.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def process_cpu_s(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


async def measure(
    row: Row,
    op: Op,
    *,
    first: int,
    ops: int,
    concurrency: int,
    redis: aioredis.Redis,
    api: psutil.Process | None,
) -> None:
    """Run ``op(first) … op(first + ops - 1)`` with ``concurrency`` loops; add to ``row``."""
    counter = iter(range(first, first + ops))
    latencies: list[float] = []
    errors = 0

    async def loop() -> None:
        nonlocal errors
        for n in counter:
            began = time.perf_counter()
            try:
                ok = await op(n)
            except (OSError, asyncio.IncompleteReadError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1

    client = psutil.Process()
    redis_before, api_before = await redis_cpu_s(redis), process_cpu_s(api)
    client_before = process_cpu_s(client)
    calls_before = await redis_calls(redis)
    gc.collect()
    gc.disable()  # this process's collector pauses are not the server's latency
    began = time.perf_counter()
    try:
        await asyncio.gather(*(loop() for _ in range(concurrency)))
    finally:
        wall = time.perf_counter() - began
        gc.enable()
    row.latencies_s += latencies
    row.errors += errors
    row.wall_s += wall
    row.redis_cpu_s += await redis_cpu_s(redis) - redis_before
    row.api_cpu_s += process_cpu_s(api) - api_before
    row.client_cpu_s += process_cpu_s(client) - client_before
    # Less the two INFO calls this function makes around the phase.
    row.redis_calls += await redis_calls(redis) - calls_before - 2


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0))
    return (
        f"nproc {usable} ({os.cpu_count()} online), {model}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def table(rows: list[Row], baseline: Row) -> str:
    head = (
        "| operation | ops/s | p50 ms | p99 ms | ops/s vs arq | p50 vs arq | p99 vs arq "
        "| CPU µs/op: API | Redis | client | Redis cmds/op | errors |"
    )
    lines = [head, "|" + "---|" * 12]
    for row in rows:
        api = f"{row.api_cpu_s / row.ops * 1e6:.0f}" if row.api_cpu_s else "-"
        lines.append(
            f"| {row.name} | {row.rate:,.0f} | {row.percentile_ms(0.5):.2f} "
            f"| {row.percentile_ms(0.99):.2f} | {row.rate / baseline.rate:.2f}x "
            f"| {row.percentile_ms(0.5) / baseline.percentile_ms(0.5):.1f}x "
            f"| {row.percentile_ms(0.99) / baseline.percentile_ms(0.99):.1f}x "
            f"| {api} | {row.redis_cpu_s / row.ops * 1e6:.0f} "
            f"| {row.client_cpu_s / row.ops * 1e6:.0f} | {row.redis_calls / row.ops:.1f} "
            f"| {row.errors} |"
        )
    return "\n".join(lines)


async def prefill_cache(cache_redis: aioredis.Redis, bodies: list[dict[str, Any]]) -> None:
    """Put each request's sprite in L1, as a completed generation would have."""
    l1 = RedisL1(cache_redis, ttl_s=3600)
    png = sprite_png(64, 64, b"bench")

    async def put(body: dict[str, Any]) -> None:
        request = SpriteRequest.model_validate(body)
        image = CachedImage.new(
            cache_key(request), png, width=64, height=64, request=canonical_fields(request)
        )
        await l1.put(image)

    for start in range(0, len(bodies), 100):
        await asyncio.gather(*(put(b) for b in bodies[start : start + 100]))


async def run(args: argparse.Namespace, redis_url: str, api_port: int, api_pid: int) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    store = TokenStore(redis)
    tokens = [await store.create(f"bench{u:04d}") for u in range(args.users)]
    arq: ArqRedis = await create_pool(
        RedisSettings.from_dsn(redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=ARQ_QUEUE,
    )
    http = RawHttp(LOCALHOST, api_port, args.concurrency)
    await http.open()
    api = psutil.Process(api_pid)
    unexpected: Counter[str] = Counter()

    def body(kind: str, n: int) -> dict[str, Any]:
        return sprite_request(f"bench {kind} sprite number {n}")

    def expect(answer: tuple[int, bytes], status: int) -> bool:
        if answer[0] != status:
            try:
                reply = json.loads(answer[1])
                what = (reply.get("error") or {}).get("code") or reply.get("status")
            except (ValueError, AttributeError):
                what = answer[1][:80].decode(errors="replace")
            unexpected[f"{answer[0]} {what} (wanted {status})"] += 1
        return answer[0] == status

    async def arq_enqueue(n: int) -> bool:
        return await arq.enqueue_job("noop", n) is not None

    async def live(n: int) -> bool:
        return expect(await http.request("GET", "/health/live"), 200)

    async def submit_miss(n: int) -> bool:
        token = tokens[n % len(tokens)]
        return expect(
            await http.request("POST", "/v1/jobs", body=body("miss", n), token=token), 202
        )

    async def submit_hit(n: int) -> bool:
        token = tokens[n % len(tokens)]
        return expect(await http.request("POST", "/v1/jobs", body=body("hit", n), token=token), 200)

    rows = [
        (Row("bare arq `enqueue_job` (no-op fn)"), arq_enqueue, None),
        (Row("HTTP floor: `GET /health/live`"), live, api),
        (Row("`POST /v1/jobs`, cache miss → 202"), submit_miss, api),
        (Row("`POST /v1/jobs`, cache hit → 200"), submit_hit, api),
    ]
    loaded = args.warmup + args.rounds * args.ops
    solo_ops = max(args.ops // 20, 50)
    await prefill_cache(redis, [body("hit", n) for n in range(loaded + solo_ops)])
    solo: list[Row] = []
    try:
        for round_ in range(-1, args.rounds):  # round -1 warms up and is not counted
            for row, op, process in rows:
                count = args.warmup if round_ < 0 else args.ops
                first = 0 if round_ < 0 else args.warmup + round_ * args.ops
                target = Row(row.name) if round_ < 0 else row
                await measure(target, op, first=first, ops=count,
                              concurrency=args.concurrency, redis=redis, api=process)  # fmt: skip
        # The same operations one at a time: the service time, without queueing.
        for row, op, process in rows:
            solo.append(Row(row.name))
            await measure(solo[-1], op, first=loaded, ops=solo_ops, concurrency=1,
                          redis=redis, api=process)  # fmt: skip
        server = await redis.info("server")
    finally:
        await http.close()
        await arq.aclose()
        await redis.aclose()

    version = server.get("valkey_version") or server.get("redis_version")
    print(f"\nspritequeue submit benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    print(
        f"load average (1 min) at start {args.load_at_start:.2f}, at end {os.getloadavg()[0]:.2f}"
    )
    print(
        f"setup: 1 API process (uvicorn), embedded Valkey {version}, no worker; client: this "
        f"process, {args.concurrency} concurrent loops, {args.rounds} round(s) x {args.ops:,} "
        f"ops per row after {args.warmup:,} warm-up, {args.users:,} users"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print(table([row for row, _, _ in rows], rows[0][0]))
    print(f"\nThe same, one operation at a time ({solo_ops:,} each):\n")
    print(table(solo, solo[0]))
    for answer, count in unexpected.most_common(5):
        print(f"unexpected answer x{count}: {answer}")
    if any(answer.startswith("202") for answer in unexpected):
        print(
            "(a cache hit answered 202 was admitted as a miss: its L1 read outlasted"
            " cache.timeout_s, which counts time waiting in a saturated API's event loop)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
    parser.add_argument("--ops", type=int, default=4000, help="operations per row per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    # Other work on the machine skews every row; the figure goes beside the table.
    args.load_at_start = os.getloadavg()[0]
    if args.smoke:
        args.ops, args.rounds, args.warmup, args.users = 200, 1, 50, 50

    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "valkey", appendonly=False).start()
        api: subprocess.Popen[bytes] | None = None
        try:
            port = free_port()
            huge = 10_000_000
            settings = test_settings(
                server.url,
                "http://127.0.0.1:9",  # never called: no worker runs
                limits={"queue_capacity": huge, "per_user": huge, "warning_at": huge},
                log_level="WARNING",
            )
            api_log = Path(tmp) / "api.log"
            with api_log.open("wb") as log:
                api = subprocess.Popen(
                    [sys.executable, "-m", "backend.cli", "api", "--port", str(port)],
                    env={**os.environ, **settings_env(settings)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            api_url = f"http://127.0.0.1:{port}"
            wait_http(api_url + "/health/live", timeout_s=60)
            try:
                asyncio.run(run(args, server.url, port, api.pid))
            except BaseException:
                print("API log (tail):\n" + api_log.read_text(errors="replace")[-3000:])
                raise
        finally:
            if api is not None:
                stop_process(api)
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
