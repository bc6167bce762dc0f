"""Chaos run: a few hundred jobs through worker SIGTERMs and SIGKILLs, Redis restarts longer
than a lease, cancels, 429s and 5xx; then the invariants of fenced attempts are checked.

    .venv/bin/python load/chaos.py              # ~300 jobs, about 2-3 minutes
    .venv/bin/python load/chaos.py --smoke      # ~60 jobs, under a minute (the test suite)

Everything runs on loopback: an embedded Valkey (AOF on, restarted on the same port and
data), the mock PixelLab in this process, one API and three worker processes. Prompts are
drawn from a mix (plain, shared by three users at once, a 503 then success, a 429 then
success, always failing, invalid) and some jobs are cancelled at a random moment.

Invariants (any violation is printed and the exit code is 1):
  1. every accepted job ends in exactly one final state, with exactly one final event;
  2. slots equal queued + running: with nothing left to run, no slot, running mark, queue
     entry or user slot is left;
  3. no DLQ entry without the job's own upstream failure (a failed call of its own, or the
     invalid outcome of the identical request it waited on);
  4. PixelLab calls per cache key are at most 1 + that key's own retryable failures (calls
     cut off by a killed or stopped worker are counted apart: they are the price of a kill),
     and no key is paid for (answered 200) twice;
  5. a SIGTERMed worker exits within 30 s (it is killed then, and the run goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from backend.embedded_redis import EmbeddedRedis
from backend.store import keys
from backend.store.tokens import TokenStore
from fixtures.factories import auth, sprite_request
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import MOCK_API_KEY, start_api, start_worker, stop_process, test_settings
from mocks.pixellab import create_mock_app

FINAL = {"completed", "failed", "cancelled"}
RETRYABLE_STATUSES = {429, 500, 502, 503, 504, 529}
LEASE_S = 3.0
STOP_WITHIN_S = 30.0  # a SIGTERMed worker exits within this (grace 0.5 s, calls ≤ 6 s)
USERS = 6


@dataclass
class Plan:
    jobs: int
    duration_s: float
    kills: int
    terms: int
    redis_restarts: int
    workers: int = 3
    cancel_ratio: float = 0.1


@dataclass
class Run:
    accepted: dict[str, tuple[str, str]] = field(default_factory=dict)  # job -> (token, prompt)
    refusals: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    cancels: int = 0


def prompt_mix(rng: random.Random, n: int) -> list[tuple[str, int]]:
    """(prompt, how many users submit it at once) for ``n`` jobs."""
    kinds = [
        ("plain", 50), ("shared", 15), ("fail503", 10), ("fail429", 10),
        ("server_error", 5), ("invalid", 5), ("slow", 5),
    ]  # fmt: skip
    names, weights = zip(*kinds, strict=True)
    mix: list[tuple[str, int]] = []
    count = 0
    while count < n:
        kind = rng.choices(names, weights)[0]
        latency = rng.randint(200, 1500)
        tag = f"{kind} {count} [mock-latency:{latency}]"
        text = {
            "plain": f"a chaos sprite {tag}",
            "shared": f"a shared chaos sprite {tag}",
            "fail503": f"a flaky chaos sprite {tag}[mock-fail:503*1]",
            "fail429": f"a throttled chaos sprite {tag}[mock-fail:429*1]",
            "server_error": f"a broken chaos sprite {tag}[mock:server_error]",
            "invalid": f"a rejected chaos sprite {tag}[mock:failure]",
            "slow": f"a slow chaos sprite {kind} {count} [mock-latency:6000]",
        }[kind]
        copies = 3 if kind == "shared" else 1
        mix.append((text, copies))
        count += copies
    return mix


async def submit_all(
    http: httpx.AsyncClient, tokens: list[str], plan: Plan, run: Run, rng: random.Random
) -> None:
    mix = prompt_mix(rng, plan.jobs)
    gap = plan.duration_s / max(len(mix), 1)
    cancels: list[asyncio.Task[None]] = []
    for text, copies in mix:
        users = rng.sample(tokens, copies)
        results = await asyncio.gather(*(submit_one(http, t, text, run) for t in users))
        for token, job_id in zip(users, results, strict=True):
            if job_id and rng.random() < plan.cancel_ratio:
                delay = rng.uniform(0, 3)
                cancels.append(asyncio.create_task(cancel_later(http, token, job_id, delay, run)))
        await asyncio.sleep(gap)
    await asyncio.gather(*cancels)


async def submit_one(http: httpx.AsyncClient, token: str, text: str, run: Run) -> str | None:
    """Submit, retrying through a Redis outage (503 unavailable) for up to 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            response = await http.post("/v1/jobs", json=sprite_request(text), headers=auth(token))
        except httpx.HTTPError:
            run.refusals["transport"] += 1
            await asyncio.sleep(0.5)
            continue
        if response.status_code in (200, 202):
            job_id = str(response.json()["job_id"])
            run.accepted[job_id] = (token, text)
            return job_id
        code = response.json().get("error", {}).get("code", str(response.status_code))
        run.refusals[code] += 1
        if response.status_code != 503:
            return None
        await asyncio.sleep(0.5)
    return None


async def cancel_later(
    http: httpx.AsyncClient, token: str, job_id: str, delay_s: float, run: Run
) -> None:
    await asyncio.sleep(delay_s)
    for _ in range(40):
        try:
            response = await http.delete(f"/v1/jobs/{job_id}", headers=auth(token))
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if response.status_code == 503:
            await asyncio.sleep(0.5)
            continue
        if response.status_code == 202:
            run.cancels += 1
        return


class Chaos:
    """Worker processes and the Redis server, and the faults inflicted on them."""

    def __init__(self, settings: Any, redis_server: EmbeddedRedis, workers: int) -> None:
        self.settings = settings
        self.redis_server = redis_server
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers = [start_worker(settings, self.procs) for _ in range(workers)]

    def replace(self, index: int) -> None:
        self.workers[index] = start_worker(self.settings, self.procs)

    async def run(self, plan: Plan, run: Run, rng: random.Random) -> None:
        faults = (["kill"] * plan.kills + ["term"] * plan.terms
                  + ["redis"] * plan.redis_restarts)  # fmt: skip
        rng.shuffle(faults)
        gap = plan.duration_s / (len(faults) + 1)
        for fault in faults:
            await asyncio.sleep(gap * rng.uniform(0.6, 1.4))
            if fault == "redis":
                await self.restart_redis()
            else:
                index = rng.randrange(len(self.workers))
                worker = self.workers[index]
                worker.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGTERM)
                try:
                    await asyncio.to_thread(worker.wait, STOP_WITHIN_S)
                except subprocess.TimeoutExpired:
                    run.events["stop too slow"] += 1  # a violation: see check()
                    worker.kill()
                    await asyncio.to_thread(worker.wait, STOP_WITHIN_S)
                self.replace(index)
            run.events[fault] += 1

    async def restart_redis(self) -> None:
        """Down for longer than a lease, then back on the same port and data (AOF)."""
        self.redis_server.stop()
        await asyncio.sleep(LEASE_S + 1.5)
        await asyncio.to_thread(self.redis_server.start)

    def stop(self) -> None:
        for process in self.procs:
            stop_process(process, timeout_s=10)


async def wait_all_final(
    http: httpx.AsyncClient, run: Run, timeout_s: float
) -> dict[str, dict[str, Any]]:
    views: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = [j for j in run.accepted if views.get(j, {}).get("status") not in FINAL]
        if not pending:
            break
        for job_id in pending:
            token = run.accepted[job_id][0]
            response = await http.get(f"/v1/jobs/{job_id}", headers=auth(token))
            if response.status_code == 200:
                views[job_id] = response.json()
        await asyncio.sleep(0.5)
    return views


async def check(
    redis: aioredis.Redis,
    settings: Any,
    run: Run,
    views: dict[str, dict[str, Any]],
    mock_stats: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    statuses = Counter(v.get("status", "missing") for v in views.values())
    statuses["missing"] += len(run.accepted) - len(views)
    if run.events["stop too slow"]:
        problems.append(f"{run.events['stop too slow']} SIGTERMed worker(s) still running "
                        f"after {STOP_WITHIN_S:g} s (killed)")  # fmt: skip
    for job_id in run.accepted:
        status = views.get(job_id, {}).get("status")
        if status not in FINAL:
            problems.append(f"job {job_id} not final: {status}")
            continue
        if views[job_id].get("cached") and views[job_id].get("attempts", 0) == 0:
            continue  # a cache hit answered at submit: its one final event is checked too
        finals = [
            fields[b"event"].decode()
            for _, fields in await redis.xrange(keys.events(job_id))
            if fields[b"event"].decode() in FINAL
        ]
        if finals != [status]:
            problems.append(f"job {job_id} ({status}) has final events {finals}")
    leftovers = {
        "slots": await redis.zcard(keys.INFLIGHT),
        "running": await redis.zcard(keys.ACTIVE),
        "queue entries": await redis.zcard(settings.queue_name),
    }
    for name, count in leftovers.items():
        if count:
            problems.append(f"{count} {name} left with every job final")
    calls: dict[str, dict[str, int]] = mock_stats["calls"]
    dlq: Counter[str] = Counter()
    for job_id in await redis.zrange(keys.DLQ, 0, -1):
        raw = await redis.get(keys.dlq_entry(job_id.decode()))
        if raw is None:
            continue
        entry = json.loads(raw)
        error_type = entry["error"]["type"]
        dlq[error_type] += 1
        failed_calls = sum(
            n for end, n in calls.get(entry["request"]["description"], {}).items()
            if end.startswith("answered:") and end != "answered:200"
        )  # fmt: skip
        if error_type == "internal" or entry.get("failures", 0) < 1 or failed_calls < 1:
            problems.append(f"DLQ entry {entry['job_id']} without its own upstream failure: "
                            f"{error_type}, failures {entry.get('failures')}")  # fmt: skip
    totals: Counter[str] = Counter()
    for prompt, ends in calls.items():
        answered = {int(end.split(":")[1]): n for end, n in ends.items() if ":" in end}
        retryable = sum(n for status, n in answered.items() if status in RETRYABLE_STATUSES)
        totals["calls"] += sum(ends.values())
        totals["answered 200"] += answered.get(200, 0)
        totals["retryable failures"] += retryable
        totals["cut off (worker killed, stopped or job cancelled)"] += ends.get("abandoned", 0)
        if sum(answered.values()) > 1 + retryable:
            problems.append(f"{prompt!r}: {sum(answered.values())} answered calls, "
                            f"{retryable} retryable failures; "
                            f"{await histories(redis, run, prompt)}")  # fmt: skip
        if answered.get(200, 0) > 1:
            problems.append(f"{prompt!r}: paid {answered[200]} times")
    figures = {
        "jobs accepted": len(run.accepted),
        "refusals while submitting": dict(run.refusals),
        "final states": dict(statuses),
        "cancels accepted": run.cancels,
        "faults": dict(run.events),
        "dead letters by type": dict(dlq),
        "pixellab": dict(totals),
        "peak calls in flight": mock_stats["peak_in_flight"],
        "leftovers": leftovers,
    }
    return figures, problems


async def histories(redis: aioredis.Redis, run: Run, prompt: str) -> str:
    """How each attempt of the jobs with this prompt ended: what a violation needs to be
    understood (a run cannot be replayed exactly)."""
    told = []
    for job_id, (_, text) in run.accepted.items():
        if text != prompt:
            continue
        raw = await redis.hget(keys.job(job_id), "history")  # type: ignore[misc]
        ends = [str(attempt.get("outcome")) for attempt in json.loads(raw or "[]")]
        told.append(f"job {job_id}: {' -> '.join(ends) or 'no attempt'}")
    return "; ".join(told) or "no accepted job"


async def main(plan: Plan, seed: int) -> int:
    rng = random.Random(seed)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sq-chaos-") as tmp:
        redis_server = EmbeddedRedis(Path(tmp) / "valkey", appendonly=True).start()
        mock = ThreadedUvicorn(create_mock_app(api_key=MOCK_API_KEY)).start()
        settings = test_settings(
            redis_server.url, mock.url,
            jobs={"lease_s": LEASE_S, "max_stalls": 5, "backoff_base_s": 0.5,
                  "position_interval_s": 1.0},
            limits={"per_user": 200, "queue_capacity": 1000},
            worker={"max_jobs": 50, "shutdown_grace_s": 0.5, "heartbeat_s": 0.5},
        )  # fmt: skip
        redis = aioredis.Redis.from_url(redis_server.url)
        store = TokenStore(redis)
        tokens = [await store.create(f"chaos{i}") for i in range(USERS)]
        api_procs: list[subprocess.Popen[bytes]] = []
        api_url = start_api(settings, api_procs)
        chaos = Chaos(settings, redis_server, plan.workers)
        run = Run()
        try:
            async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
                await asyncio.gather(
                    submit_all(http, tokens, plan, run, rng), chaos.run(plan, run, rng)
                )
                views = await wait_all_final(http, run, timeout_s=120)
                mock_stats = (await http.get(mock.url + "/_mock/stats")).json()
            figures, problems = await check(redis, settings, run, views, mock_stats)
        finally:
            chaos.stop()
            for process in api_procs:
                stop_process(process)
            await redis.aclose()
            mock.stop()
            redis_server.stop()
    figures["seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(figures, indent=2))
    print(f"invariant violations: {len(problems)}")
    for problem in problems[:50]:
        print("  " + problem)
    return 1 if problems else 0


def parse_args(argv: list[str]) -> tuple[Plan, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="~60 jobs, under a minute")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    if args.smoke:
        return Plan(jobs=60, duration_s=20, kills=1, terms=1, redis_restarts=1), args.seed
    return Plan(jobs=300, duration_s=90, kills=4, terms=4, redis_restarts=2), args.seed


if __name__ == "__main__":
    plan, seed = parse_args(sys.argv[1:])
    sys.exit(asyncio.run(main(plan, seed)))
