"""Shared pieces of the load scripts: child processes, /proc figures, a lean HTTP client, stats."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

import redis.asyncio as aioredis

from backend.config import Settings
from backend.embedded_redis import free_port
from backend.models import JobRecord, SpriteRequest
from backend.processes import stop_process, tied, wait_http
from backend.queue.producer import Producer
from backend.queue.resources import Resources
from fixtures.stack import settings_env

LOCALHOST = "127.0.0.1"  # the only address these scripts ever send traffic to
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted ``values``, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds, and the sample count."""
    ms = sorted(s * 1000 for s in seconds)
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 0.50),
        "p95_ms": percentile(ms, 0.95),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1] if ms else float("nan"),
    }


# ---- the machine and its processes ---------------------------------------------------------


def machine() -> dict[str, str | int]:
    """Date, CPU count and model, Python and kernel: the header of every published figure."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count() or 0,
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_avg_1m": f"{os.getloadavg()[0]:.2f}",
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat`` utime + stime)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may contain spaces.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def redis_commands(redis: aioredis.Redis) -> int:
    """The commands Redis has run since it started (``INFO commandstats``), this INFO
    included; a script counts once for itself and once for each command it calls."""
    stats = await redis.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (now) and ``VmHWM`` (peak) of a process, in KiB, from ``/proc/PID/status``."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def raise_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``finally`` blocks stop what the script started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # Once: a second SIGTERM must not interrupt the clean-up the first one started.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


class Children:
    """The child processes of one script; each logs to ``log_dir/NAME.log``, all stop on exit.

    Children are also asked to die with this process (``PR_SET_PDEATHSIG``), so even a
    ``kill -9`` of the script leaves nothing running.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                tied(argv),
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._running.append((name, process))
        return process

    def cli(
        self, name: str, args: list[str], settings: Settings, **extra_env: str
    ) -> subprocess.Popen[bytes]:
        """``spritequeue ARGS`` configured by ``settings`` (as SPRITEQ_* variables)."""
        argv = [sys.executable, "-m", "backend.cli", *args]
        return self.start(name, argv, {**settings_env(settings), **extra_env})

    def stop(self, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        stop_process(process, timeout_s)
        self._running = [(n, p) for n, p in self._running if p is not process]

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def check_alive(self) -> None:
        """Raises ``ChildDied`` (with the end of its log) if a child has exited."""
        for name, process in self._running:
            if process.poll() is not None:
                raise ChildDied(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")

    def close(self) -> None:
        for _, process in reversed(self._running):
            stop_process(process, 10.0)
        self._running.clear()

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ChildDied(Exception):
    """A process the script started has exited on its own."""


# ---- a lean HTTP/1.1 client ----------------------------------------------------------------


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    async def exchange(self, raw: bytes) -> tuple[int, bytes, bool]:
        """Send one request; returns (status, body, server wants the connection closed)."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = None, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        if chunked:
            body = await self._chunked()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body, close = await self.reader.read(), True
        return status, body, close

    async def _chunked(self) -> bytes:
        parts = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size + 2))
        await self.reader.readuntil(b"\r\n")
        return b"".join(part[:-2] for part in parts)

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """Keep-alive HTTP/1.1 to one port on 127.0.0.1, at most ``size`` connections.

    Not httpx: a load generator on the same two cores as the server must spend as little
    CPU per request as it can, or it measures itself. This costs a few tens of µs per call.
    """

    # uvicorn closes a keep-alive connection after 5 s idle; one idle for longer than this
    # is dropped rather than risk a request on a socket the server is closing.
    MAX_IDLE_S = 3.0

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(size)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {LOCALHOST}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        async with self._slots:
            connection = self._take_idle() or await self._connect()
            try:
                status, reply, close = await connection.exchange(raw)
            except BaseException:
                connection.close()
                raise
            if close:
                connection.close()
            else:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            return status, reply

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if time.monotonic() - connection.idle_since < self.MAX_IDLE_S:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        return _Connection(*await asyncio.open_connection(LOCALHOST, self.port))

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


# ---- timing what a queue does -------------------------------------------------------------

Parser = Callable[[bytes], tuple[str, str] | None]  # a message -> (kind, job id), or skip it
FINAL = "final"  # the kind under which every ending (completed, failed, …) is also stamped


class Watcher:
    """Stamps each message of one pub/sub channel on arrival: ``stamps[kind][job_id]``.

    A message whose kind is in ``endings`` is stamped under ``FINAL`` too, so a phase can
    wait for every job to end however it ends, and not sit out its timeout on a failure.
    """

    def __init__(
        self, redis_url: str, channel: str, parse: Parser, endings: Collection[str]
    ) -> None:
        self._client = aioredis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub()
        self._channel = channel
        self._parse = parse
        self._endings = frozenset(endings)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stamps: dict[str, dict[str, float]] = collections.defaultdict(dict)

    async def start(self) -> None:
        """Subscribe, and return once Redis has confirmed it; raises ``TimeoutError``."""
        await self._pubsub.subscribe(self._channel)
        async with asyncio.timeout(10):
            while (message := await self._pubsub.get_message(timeout=1.0)) is None or (
                message["type"] != "subscribe"
            ):
                pass
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            now = time.perf_counter()
            parsed = self._parse(message["data"])
            if parsed is not None:
                kind, job_id = parsed
                self.stamps[kind].setdefault(job_id, now)
                if kind in self._endings:
                    self.stamps[FINAL].setdefault(job_id, now)
                self._changed.set()

    async def wait(self, kind: str, want: int | Collection[str], timeout_s: float) -> bool:
        """Until ``want`` (a count, or these ids) of ``kind`` have arrived; False on timeout."""
        deadline = time.monotonic() + timeout_s

        def done() -> bool:
            seen = self.stamps[kind]
            if isinstance(want, int):
                return len(seen) >= want
            return all(job_id in seen for job_id in want)

        while not done():
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                return done()
        return True

    def reset(self) -> None:
        self.stamps.clear()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._client.aclose()


def drain_rate(stamps: dict[str, float]) -> float:
    """Jobs/s between the first and the last completion: process start-up is not counted."""
    times = sorted(stamps.values())
    if len(times) < 2 or times[-1] == times[0]:
        return float("nan")
    return (len(times) - 1) / (times[-1] - times[0])


class Profiler:
    """``py-spy record`` attached to a running process, stopped (and written) with SIGINT."""

    def __init__(self, children: Children, out_dir: Path | None) -> None:
        self._children = children
        self._out_dir = out_dir
        self.outputs: dict[str, Path] = {}

    @staticmethod
    def executable() -> Path:
        return Path(sys.executable).with_name("py-spy")

    @classmethod
    def available(cls) -> bool:
        return cls.executable().exists()

    def start(self, name: str, pid: int) -> subprocess.Popen[bytes] | None:
        if self._out_dir is None:
            return None
        out = self._out_dir / f"{name}.txt"
        self.outputs[name] = out
        argv = [str(self.executable()), "record", "--pid", str(pid), "--rate", "100"]
        # --nonblocking: sampling never pauses the process, so it costs the figures little.
        argv += ["--nonblocking", "--format", "raw", "--output", str(out)]
        return self._children.start(f"py-spy-{name}", argv)

    def stop(self, process: subprocess.Popen[bytes] | None) -> None:
        if process is None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        finally:
            self._children.stop(process)


def peak_concurrency(started: dict[str, float], finished: dict[str, float]) -> int:
    """Most jobs between their "started" and "completed" events at any one moment."""
    moves = sorted([(t, 1) for t in started.values()] + [(t, -1) for t in finished.values()])
    running = peak = 0
    for _, step in moves:
        running += step
        peak = max(peak, running)
    return peak


async def admit_jobs(resources: Resources, count: int, *, per_user: int) -> list[JobRecord]:
    """``count`` distinct jobs through the producer's admit script, ``per_user`` per user
    (users ``bench0``, ``bench1``, …); nothing runs them."""
    producer = Producer(resources)
    records: list[JobRecord] = []
    for index in range(count):
        request = SpriteRequest.model_validate(
            {"description": f"bench sprite {index} {time.time_ns()}",
             "image_size": {"width": 64, "height": 64}})  # fmt: skip
        record = producer.new_record(f"bench{index // per_user}", request, None)
        await producer.enqueue(record)
        records.append(record)
    return records


async def open_event_stream(
    address: tuple[str, int], job_id: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``GET /v1/jobs/{id}/events`` on a bare socket, past a ``200`` head; the caller closes.

    Not httpx: its pool does work per connection on every close, and with 1,000 streams in
    one process that stalled the loop for up to 0.5 s, which showed up as server latency.
    """
    reader, writer = await asyncio.open_connection(*address)
    writer.write(
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {address[0]}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if head.split(b" ", 2)[1] != b"200":
        writer.close()
        raise RuntimeError(f"stream of {job_id}: {head.splitlines()[0]!r}")
    return reader, writer


@contextlib.contextmanager
def api_child(settings: Settings, log_dir: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """One ``spritequeue api`` process on a free port, answering, as ``(port, process)``.

    Its output goes to ``log_dir/api.log``, whose tail is printed if the block fails; the
    process is stopped when the block ends.
    """
    port = free_port()
    log_path = log_dir / "api.log"
    with log_path.open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "api", "--port", str(port)],
            env={**os.environ, **settings_env(settings)}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_http(f"http://{LOCALHOST}:{port}/health/live")
        yield port, api
    except BaseException:
        print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        stop_process(api)


async def wait_answering(port: int, path: str, timeout_s: float = 60.0) -> None:
    """Until ``GET path`` on 127.0.0.1:``port`` answers below 500; raises ``TimeoutError``.

    Asynchronous, not ``backend.processes.wait_http`` in a thread: this process stays
    single-threaded while it starts children.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        http = HttpPool(port, 1)
        try:
            if (await http.request("GET", path))[0] < 500:
                return
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            http.close()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"127.0.0.1:{port}{path} did not answer within {timeout_s:g} s")


# ---- load shapes ---------------------------------------------------------------------------


async def at_rate(count: int, rate: float, action: Callable[[int], Awaitable[None]]) -> float:
    """Start ``action(i)`` at ``i / rate`` s, open loop: a slow answer never delays the next.

    Returns the worst lag of a start behind its schedule (s): large means the load generator,
    not the server, set the pace. Raises the first exception of any action.
    """
    began = time.perf_counter()
    worst = 0.0
    tasks = []
    for index in range(count):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            worst = max(worst, -delay)
        tasks.append(asyncio.create_task(action(index)))
    await asyncio.gather(*tasks)
    return worst


async def flood(count: int, concurrency: int, action: Callable[[int], Awaitable[None]]) -> float:
    """Run ``action(0..count-1)`` with ``concurrency`` in flight, closed loop; returns seconds."""
    numbers = iter(range(count))

    async def lane() -> None:
        for index in numbers:
            await action(index)

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - began


# ---- py-spy output -------------------------------------------------------------------------


def hot_spots(
    collapsed: Path, top: int = 12, within: str | None = None
) -> list[tuple[str, float, float]]:
    """(function, self %, total %) from ``py-spy record --format raw``, busiest first.

    By self time; or, with ``within`` (e.g. ``"backend/"``), only the functions whose file
    path contains it, by total time. Total counts a function once per sample.
    """
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[_frame_name(frames[-1])] += count
        for name in {_frame_name(f) for f in frames if within is None or within in f}:
            total[name] += count
    if not samples:
        return []
    ranked = total.most_common(top) if within else own.most_common(top)
    return [(name, 100 * own[name] / samples, 100 * total[name] / samples) for name, _ in ranked]


def _frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``: lines merged per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    short = "/".join(path.split("/")[-2:])
    return f"{name} ({short})" if where else name
