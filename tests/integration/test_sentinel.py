"""Sentinel failover with real processes: a primary, a replica and three Sentinels on loopback.

No acknowledged job is lost, none runs twice at PixelLab, the API answers 503 while there is
no primary and recovers after the promotion; scripts re-load on the new primary; a submit is
acknowledged only once a replica has it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from backend.config import Settings
from backend.errors import Unavailable
from backend.models import JobStatus, SpriteRequest
from backend.queue.producer import Producer
from backend.queue.resources import open_resources, redis_client
from backend.store.connect import aclose_client
from backend.store.durable import Durability
from backend.store.jobs import Written
from backend.store.scripts import Scripts
from backend.store.tokens import TokenStore
from fixtures.factories import auth, sprite_request
from fixtures.ha import SentinelGroup
from fixtures.stack import start_api, start_worker

pytestmark = pytest.mark.slow
FINAL = {"completed", "failed", "cancelled"}


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path / "ha") as started:
        yield started


@pytest.fixture
async def ha_redis(group: SentinelGroup) -> AsyncIterator[aioredis.Redis]:
    client = redis_client(group.url)
    yield client
    await aclose_client(client)


async def _until_ok(call: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()  # type: ignore[misc]
        except (RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
async def test_client_follows_the_primary_and_scripts_reload(
    group: SentinelGroup, ha_redis: aioredis.Redis
) -> None:
    scripts = Scripts(ha_redis)
    await scripts.load()
    await ha_redis.set("before", "1")
    assert await scripts.run("dropStale", ["j", "a", "b", "c", "q"], ["x"]) in (0, 1)
    old = await asyncio.to_thread(group.kill_primary)
    await asyncio.to_thread(group.wait_promoted, old)
    # The new primary has the data but, to be sure of the NOSCRIPT path, no scripts.
    await _until_ok(lambda: ha_redis.script_flush(), timeout_s=15)
    assert await ha_redis.get("before") == b"1"
    assert await scripts.run("dropStale", ["j", "a", "b", "c", "q"], ["x"]) in (0, 1)
    info = await ha_redis.info("server")
    assert int(info["tcp_port"]) == group.replica_port


@pytest.mark.timeout(60)
async def test_admit_waits_for_a_replica(
    group: SentinelGroup, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=group.url)
    resources = await open_resources(settings)
    try:
        durability = Durability(resources.redis, resources.scripts, min_replicas=1, timeout_ms=100)
        assert await durability.replicas() == 1
        acked = await durability.run("dropStale", ["j", "a", "b", "c", "q"], ["x"])
        assert acked.durable and acked.acked == 1
        # A replica that stops answering: the write is not acknowledged in time.
        replica = group._nodes[group.replica_port]
        replica.send_signal(signal.SIGSTOP)
        try:
            await resources.redis.set("k", "v")
            started = time.monotonic()
            late = await durability.run("dropStale", ["j", "a", "b", "c", "q"], ["x"])
            assert not late.durable and late.acked == 0
            assert time.monotonic() - started < 1.0
            with pytest.raises(Unavailable):
                await Producer(resources).submit(
                    "alice", SpriteRequest.model_validate(sprite_request("never acked"))
                )
            # A start that no replica acknowledged is not a start: the runner puts the job
            # back rather than call PixelLab with a fence a failover could lose.
            replica.send_signal(signal.SIGCONT)
            submission = await Producer(resources).submit(
                "alice", SpriteRequest.model_validate(sprite_request("a lagging start"))
            )
            job_id = submission.view.job_id
            replica.send_signal(signal.SIGSTOP)
            record = await resources.jobs.get(job_id)
            assert record is not None
            started = record.model_copy(update={"status": JobStatus.ACTIVE})
            written, _ = await resources.jobs.start_attempt(
                record, started, token="t", worker_id="w", lease_ms=30_000
            )
            assert written is Written.UNREPLICATED
        finally:
            replica.send_signal(signal.SIGCONT)
    finally:
        await resources.close()


@pytest.mark.timeout(150)
async def test_failover_under_load_loses_no_acknowledged_job(
    group: SentinelGroup,
    ha_redis: aioredis.Redis,
    make_settings: Callable[..., Settings],
    mock_pixellab: object,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = make_settings(
        redis_url=group.url,
        limits={"per_user": 1000, "queue_capacity": 5000},
        jobs={"lease_s": 6.0},
    )
    token = await TokenStore(ha_redis).create("alice")
    apis = [start_api(settings, processes) for _ in range(2)]
    for _ in range(2):
        start_worker(settings, processes)
    accepted: dict[str, str] = {}  # job id -> API URL
    statuses: Counter[str] = Counter()
    unavailable_at: list[float] = []
    ok_at: list[float] = []
    stop = asyncio.Event()

    async def submit(http: httpx.AsyncClient, n: int) -> None:
        base = apis[n % 2]
        sent = time.monotonic()
        try:
            answer = await http.post(
                f"{base}/v1/jobs",
                json=sprite_request(f"ha sprite {n} [mock-latency:300]"),
                headers=auth(token),
            )
        except httpx.HTTPError as exc:
            statuses[f"transport:{type(exc).__name__}"] += 1
            return
        code = answer.status_code
        if code >= 500:
            statuses[f"{code}:{answer.json().get('error', {}).get('code', '?')}"] += 1
            if code == 503:
                unavailable_at.append(sent)
        else:
            statuses[str(code)] += 1
        if code == 202:
            accepted[answer.json()["job_id"]] = base
            ok_at.append(sent)

    async def load(http: httpx.AsyncClient) -> None:
        n, tasks = 0, []
        while not stop.is_set():
            tasks.append(asyncio.create_task(submit(http, n)))
            n += 1
            await asyncio.sleep(0.2)  # five submits a second
        await asyncio.gather(*tasks)

    async with httpx.AsyncClient(timeout=10) as http:
        loader = asyncio.create_task(load(http))
        await asyncio.sleep(4)
        killed_at = time.monotonic()
        old = await asyncio.to_thread(group.kill_primary)
        promoted_at = await asyncio.to_thread(group.wait_promoted, old, 30.0)
        await asyncio.sleep(8)
        stop.set()
        await loader
        print(
            f"\nfailover: promoted {promoted_at - killed_at:.1f} s after SIGKILL; "
            f"503s from {min(unavailable_at, default=killed_at) - killed_at:+.1f} s to "
            f"{max(unavailable_at, default=killed_at) - killed_at:+.1f} s; answers {dict(statuses)}"
        )
        # Every 202 ends in a final state.
        deadline = time.monotonic() + 60
        pending = dict(accepted)
        while pending and time.monotonic() < deadline:
            for job_id, base in list(pending.items()):
                try:
                    got = await http.get(f"{base}/v1/jobs/{job_id}", headers=auth(token))
                except httpx.HTTPError:
                    continue
                assert got.status_code in (200, 503), got.text
                if got.status_code == 200 and got.json()["status"] in FINAL:
                    assert got.json()["status"] == "completed", got.json()
                    del pending[job_id]
            await asyncio.sleep(0.5)
        assert not pending, f"{len(pending)} acknowledged jobs never finished"
        stats = (await http.get(f"{mock_pixellab.url}/_mock/stats")).json()  # type: ignore[attr-defined]
    twice = {p: ends for p, ends in stats["calls"].items() if ends.get("answered:200", 0) > 1}
    assert not twice, f"ran twice at PixelLab: {twice}"
    others = {k: v for k, v in statuses.items() if k[0] == "5" and k != "503:unavailable"}
    assert not others and not any(k.startswith("transport") for k in statuses), statuses
    assert len(accepted) >= 20
    recovered = [t for t in ok_at if t > promoted_at]
    assert recovered and recovered[0] - promoted_at < 15
    last_503 = max(unavailable_at, default=promoted_at)
    assert last_503 - promoted_at < 15
