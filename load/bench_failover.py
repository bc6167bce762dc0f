"""Sentinel failover, measured: the p99 submit latency cost of the durable acknowledgement
(``WAIT`` for one replica) beside the same load without replicas, and the window of 503s
when the primary is SIGKILLed, in one run.

    .venv/bin/python load/bench_failover.py [--rate 20] [--seconds 10]

Runs, each with a fresh API and worker (threads) and the mock PixelLab, at ``--rate``
submits a second for ``--seconds``:
1. one Valkey, no replicas (the baseline: no WAIT is sent);
2. the Sentinel group (primary, replica, three Sentinels), ``min_replicas_ack=0``: the
   Sentinel client without WAIT;
3. the same group with ``min_replicas_ack=1`` (the default): every admit WAITs;
4. the same load, the primary SIGKILLed after 3 s: how long submits answer 503, and the
   time from the promotion to the first 202.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backend.api.app import create_app
from backend.embedded_redis import EmbeddedRedis
from backend.queue.resources import redis_client
from backend.store.connect import aclose_client
from backend.store.tokens import TokenStore
from fixtures.factories import auth, sprite_request
from fixtures.ha import SentinelGroup
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import MOCK_API_KEY, WorkerThread, test_settings
from mocks.pixellab import create_mock_app


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)  # of the 202s
    answers: Counter[str] = field(default_factory=Counter)
    unavailable_at: list[float] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        values = sorted(self.latencies_ms)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def load(
    api: str, token: str, *, rate: float, seconds: float, tag: str, during: object = None
) -> Run:
    run = Run()

    async def one(http: httpx.AsyncClient, n: int) -> None:
        sent = time.monotonic()
        try:
            answer = await http.post(
                f"{api}/v1/jobs",
                json=sprite_request(f"{tag} sprite {n} [mock-latency:200]"),
                headers=auth(token),
            )
        except httpx.HTTPError as exc:
            run.answers[type(exc).__name__] += 1
            return
        run.answers[str(answer.status_code)] += 1
        if answer.status_code == 202:
            run.latencies_ms.append((time.monotonic() - sent) * 1000)
            run.accepted_at.append(sent)
        elif answer.status_code == 503:
            run.unavailable_at.append(sent)

    async with httpx.AsyncClient(timeout=10) as http:
        tasks, n, start = [], 0, time.monotonic()
        while time.monotonic() - start < seconds:
            tasks.append(asyncio.create_task(one(http, n)))
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return run


async def measure(
    url: str,
    mock: str,
    *,
    ack: int,
    rate: float,
    seconds: float,
    tag: str,
    group: SentinelGroup | None = None,
) -> tuple[Run, dict[str, float]]:
    settings = test_settings(
        url, mock,
        redis={"min_replicas_ack": ack},
        limits={"per_user": 100_000, "queue_capacity": 100_000},
        log_level="ERROR",
    )  # fmt: skip
    client = redis_client(url)
    await client.flushall()
    token = await TokenStore(client).create("bench")
    await aclose_client(client)
    marks: dict[str, float] = {}
    with ThreadedUvicorn(create_app(settings)) as api, WorkerThread(settings):
        await load(api.url, token, rate=rate, seconds=1, tag=tag + "-warm")
        if group is None:
            return await load(api.url, token, rate=rate, seconds=seconds, tag=tag), marks

        async def failover() -> None:
            await asyncio.sleep(3)
            marks["killed"] = time.monotonic()
            old = await asyncio.to_thread(group.kill_primary)
            marks["promoted"] = await asyncio.to_thread(group.wait_promoted, old)

        kill = asyncio.create_task(failover())
        run = await load(api.url, token, rate=rate, seconds=seconds, tag=tag)
        await kill
        return run, marks


def line(name: str, run: Run, base: Run | None = None) -> str:
    ratio = f", p99 x{run.p(0.99) / base.p(0.99):.2f} of the baseline" if base else ""
    return (
        f"{name:<34} 202s {len(run.latencies_ms):>4}  p50 {run.p(0.5):6.1f} ms  "
        f"p99 {run.p(0.99):6.1f} ms{ratio}  answers {dict(run.answers)}"
    )


async def main(rate: float, seconds: float) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        ThreadedUvicorn(create_app_mock()) as mock,
    ):
        with EmbeddedRedis(Path(tmp) / "single", appendonly=True) as single:
            base, _ = await measure(single.url, mock.url, ack=1, rate=rate, seconds=seconds,
                                    tag="single")  # fmt: skip
        with SentinelGroup(Path(tmp) / "ha") as group:
            nowait, _ = await measure(group.url, mock.url, ack=0, rate=rate, seconds=seconds,
                                      tag="nowait")  # fmt: skip
            durable, _ = await measure(group.url, mock.url, ack=1, rate=rate, seconds=seconds,
                                       tag="wait")  # fmt: skip
            fail, marks = await measure(group.url, mock.url, ack=1, rate=rate,
                                        seconds=max(seconds, 15), tag="failover",
                                        group=group)  # fmt: skip
    print(f"rate {rate:g}/s for {seconds:g} s per run; the mock answers in 200 ms")
    print(line("one Valkey, no replicas (baseline)", base))
    print(line("Sentinel, replica, no WAIT", nowait, base))
    print(line("Sentinel, replica, WAIT 1 (default)", durable, base))
    killed, promoted = marks["killed"], marks["promoted"]
    window = (
        f"{min(fail.unavailable_at) - killed:+.2f} s .. {max(fail.unavailable_at) - killed:+.2f} s"
        if fail.unavailable_at
        else "none"
    )
    after = [t for t in fail.accepted_at if t > promoted]
    print(
        f"failover: promoted {promoted - killed:.2f} s after SIGKILL; 503s {window} "
        f"({len(fail.unavailable_at)} answers); first 202 "
        f"{(after[0] - promoted if after else float('nan')):.2f} s after the promotion; "
        f"answers {dict(fail.answers)}"
    )


def create_app_mock() -> object:
    return create_mock_app(api_key=MOCK_API_KEY)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.seconds))
