"""Faults that production brings every week, caused for real: a deploy mid-call, a slow or
failing PixelLab, a slow Redis link that opens race windows, cancels racing a worker.

Each test is a regression test for a way the job path once paid PixelLab twice, dead-lettered
a healthy job or let a stale write undo a newer one (fenced attempts, issue 14).
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from backend.config import Settings
from backend.embedded_redis import EmbeddedRedis
from backend.store import keys
from backend.store.scripts import with_includes
from fixtures.factories import auth, sprite_request, wait_for_status, wait_until
from fixtures.netproxy import SlowLink
from fixtures.servers import ThreadedUvicorn
from fixtures.stack import start_api, start_worker
from tests.conftest import Stack

FINAL = {"completed", "failed", "cancelled"}
pytestmark = pytest.mark.slow


async def submit(http: httpx.AsyncClient, token: str, description: str, **fields: Any) -> str:
    response = await http.post(
        "/v1/jobs", json=sprite_request(description, **fields), headers=auth(token)
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def mock_calls(mock: ThreadedUvicorn, description: str) -> dict[str, int]:
    """How each PixelLab call with this prompt ended: ``answered:<status>`` or ``abandoned``."""
    calls: dict[str, int] = httpx.get(mock.url + "/_mock/stats").json()["calls"]
    return calls.get(description, {})  # type: ignore[return-value]


def outcomes(view: dict[str, Any]) -> list[str]:
    return [attempt["outcome"] for attempt in view["history"]]


async def job_view(http: httpx.AsyncClient, job_id: str, token: str) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get(f"/v1/jobs/{job_id}", headers=auth(token))).json()
    return body


async def admin_view(redis: aioredis.Redis, job_id: str) -> dict[str, Any]:
    """The record as stored (history included), bypassing the API."""
    from backend.models import JobRecord

    fields = await redis.hgetall(keys.job(job_id))  # type: ignore[misc]
    record = JobRecord.from_fields({k.decode(): v.decode() for k, v in fields.items()})
    return record.model_dump(mode="json")


async def through_a_deploy(
    settings: Settings,
    processes: list[subprocess.Popen[bytes]],
    token: str,
    description: str,
    moment: Callable[[], Awaitable[bool]],
    what: str,
) -> tuple[str, dict[str, Any]]:
    """Submit ``description`` to a stack of one API and one worker; at ``moment``, the
    deploy: SIGTERM the worker (past its grace, its tasks are cancelled), wait for it to
    exit cleanly, start the next one. Returns the job id and its final view."""
    url = start_api(settings, processes)
    worker = start_worker(settings, processes)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        job_id = await submit(http, token, description)
        await wait_until(moment, 20, what)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0
        start_worker(settings, processes)
        done = await wait_for_status(http, job_id, token, FINAL, timeout_s=40)
    return job_id, done


# ---- honest retry budgets ------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_a_deploy_mid_call_spends_no_retry(
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    tokens: dict[str, str],
    mock_pixellab: ThreadedUvicorn,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    # One retry (the default). The deploy cuts the first call; the next call meets a 503;
    # the retry after it succeeds. Before: the requeue spent the only retry, so the 503
    # dead-lettered the job as server_error with attempts 2.
    settings = make_settings(worker={"shutdown_grace_s": 0.3})
    assert settings.jobs.max_retries == 1
    description = "a deployed dragon [mock-latency:1500][mock-fail:503*2]"

    async def calling() -> bool:
        async with httpx.AsyncClient() as http:
            stats = (await http.get(mock_pixellab.url + "/_mock/stats")).json()
        return bool(stats["by_description"].get(description)) and stats["in_flight"] > 0

    job_id, done = await through_a_deploy(
        settings, processes, tokens["alice"], description, calling, "the first PixelLab call"
    )
    assert done["status"] == "completed", (done, await admin_view(redis, job_id))
    assert done["attempts"] == 3
    stored = await admin_view(redis, job_id)
    assert outcomes(stored) == ["interrupted", "failed", "completed"]
    assert stored["failures"] == 1 and stored["stalls"] == 0
    assert mock_calls(mock_pixellab, description) == {
        "abandoned": 1, "answered:503": 1, "answered:200": 1,
    }  # fmt: skip
    assert await redis.zcard(keys.DLQ) == 0


@pytest.mark.timeout(90)
async def test_a_deploy_as_pixellab_answers_keeps_the_answer(
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    tokens: dict[str, str],
    mock_pixellab: ThreadedUvicorn,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    # PixelLab has begun to answer (headers in, a large body still on its way) when the
    # deploy's grace runs out. Before: the stop cut the read off, the job went back to the
    # queue as interrupted and the next worker paid PixelLab for the same image again (seen
    # in the chaos run as "paid 2 times" after an interrupted attempt).
    settings = make_settings(worker={"shutdown_grace_s": 0.3})
    description = "a heron answered slowly [mock-latency:200][mock-body-ms:2000]"

    async def answering() -> bool:
        return mock_calls(mock_pixellab, description).get("answered:200", 0) > 0

    # The deploy's grace (0.3 s) ends mid-answer.
    job_id, done = await through_a_deploy(
        settings, processes, tokens["alice"], description, answering, "the answer to begin"
    )
    await asyncio.sleep(1.0)  # a second call, if any, would have begun by now
    stored = await admin_view(redis, job_id)
    assert done["status"] == "completed", (done, stored)
    assert mock_calls(mock_pixellab, description) == {"answered:200": 1}, outcomes(stored)
    assert outcomes(stored) == ["completed"]


# ---- a single flight that holds ------------------------------------------------------------


async def submit_from_all(
    http: httpx.AsyncClient, tokens: dict[str, str], description: str
) -> list[tuple[str, str]]:
    """The same prompt from three users at once; returns (token, job id) pairs."""
    users = [tokens["alice"], tokens["bob"], tokens["admin"]]
    ids = await asyncio.gather(*(submit(http, token, description) for token in users))
    return list(zip(users, ids, strict=True))


async def final_views(
    http: httpx.AsyncClient, jobs: list[tuple[str, str]], timeout_s: float
) -> list[dict[str, Any]]:
    return list(
        await asyncio.gather(
            *(wait_for_status(http, j, t, FINAL, timeout_s=timeout_s) for t, j in jobs)
        )
    )


@pytest.mark.timeout(60)
async def test_a_slow_call_is_paid_once_however_long_it_takes(
    client: httpx.AsyncClient, tokens: dict[str, str], mock_pixellab: ThreadedUvicorn
) -> None:
    # Waiters wait while the owner's lease lives. Before: they gave up after a fixed wait
    # (10 s in tests, 60 s in production) and each paid for a call of its own.
    description = "a slow shared golem [mock-latency:12000]"
    jobs = await submit_from_all(client, tokens, description)
    views = await final_views(client, jobs, timeout_s=40)
    assert [v["status"] for v in views] == ["completed"] * 3
    assert [v["error"] for v in views] == [None] * 3
    assert mock_calls(mock_pixellab, description) == {"answered:200": 1}


async def test_a_503_then_success_costs_two_calls_not_three(
    client: httpx.AsyncClient, tokens: dict[str, str], mock_pixellab: ThreadedUvicorn
) -> None:
    # The owner's call fails retryably: exactly one waiter takes the flight over; the owner's
    # own retry then finds the image in the cache. Before: every waiter called by itself.
    description = "a flaky shared imp [mock-latency:400][mock-fail:503*1]"
    jobs = await submit_from_all(client, tokens, description)
    views = await final_views(client, jobs, timeout_s=20)
    assert [v["status"] for v in views] == ["completed"] * 3
    assert mock_calls(mock_pixellab, description) == {"answered:503": 1, "answered:200": 1}


async def test_waiters_share_a_final_failure_without_a_call(
    client: httpx.AsyncClient, tokens: dict[str, str], mock_pixellab: ThreadedUvicorn
) -> None:
    description = "a forbidden shape [mock:failure][mock-latency:400]"
    jobs = await submit_from_all(client, tokens, description)
    views = await final_views(client, jobs, timeout_s=20)
    assert [v["status"] for v in views] == ["failed"] * 3
    assert {v["error"]["type"] for v in views} == {"invalid_request"}
    assert mock_calls(mock_pixellab, description) == {"answered:422": 1}


# ---- what a client sees ------------------------------------------------------------------


async def test_a_timeout_below_the_floor_is_a_422(
    client: httpx.AsyncClient, tokens: dict[str, str], settings: Settings
) -> None:
    assert settings.jobs.min_timeout_s > 0.001  # the test stack's floor (production: 5 s)
    for value in (1e-300, 0.001):
        response = await client.post(
            "/v1/jobs", json=sprite_request("a hurried hare", timeout_s=value),
            headers=auth(tokens["alice"]),
        )  # fmt: skip
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["field"] == "timeout_s"


async def test_a_resubmission_after_a_cancel_or_a_failure_is_a_new_job(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    alice = tokens["alice"]
    running = await submit(client, alice, "a cancelled crow [mock-latency:3000]")
    await wait_for_status(client, running, alice, {"active"})
    assert (await client.delete(f"/v1/jobs/{running}", headers=auth(alice))).status_code == 202
    failed = await submit(client, alice, "a doomed dove [mock:failure]")
    await wait_for_status(client, failed, alice, FINAL)
    for old, description in ((running, "a cancelled crow [mock-latency:3000]"),
                             (failed, "a doomed dove [mock:failure]")):  # fmt: skip
        again = await client.post("/v1/jobs", json=sprite_request(description), headers=auth(alice))
        body = again.json()
        assert again.status_code == 202 and not body["deduplicated"], body
        assert body["job_id"] != old and body["status"] in ("queued", "active")
        await client.delete(f"/v1/jobs/{body['job_id']}", headers=auth(alice))


async def test_a_deferred_job_reports_the_defer_in_its_wait(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    alice = tokens["alice"]
    job_id = await submit(client, alice, "a patient snail [mock:rate_limited][mock-retry-after:30]")

    async def deferred() -> bool:
        view = await job_view(client, job_id, alice)
        return view["status"] == "queued" and view["attempts"] == 1

    await wait_until(deferred, 10, "the job to be deferred by the 429")
    view = await job_view(client, job_id, alice)
    assert view["position"] == 1
    assert 25.0 <= view["estimated_wait_s"] <= 33.0, view
    assert (await client.delete(f"/v1/jobs/{job_id}", headers=auth(alice))).status_code == 202


async def test_malformed_queries_and_headers_are_4xx(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    alice = auth(tokens["alice"])
    for query in ("9999999999999999999999999", "%EF%BC%95", "-1", "1e3", "5 "):
        response = await client.get(f"/v1/jobs?limit={query}", headers=alice)
        assert response.status_code == 422, (query, response.status_code)
    job_id = await submit(client, tokens["alice"], "a header test [mock-latency:2000]")
    for last in ("18446744073709551615-18446744073709551615", "99999999999999999999", "1-2-3"):
        response = await client.get(
            f"/v1/jobs/{job_id}/events", headers={**alice, "Last-Event-ID": last}
        )
        assert response.status_code == 422, (last, response.status_code)
    await client.delete(f"/v1/jobs/{job_id}", headers=alice)


# ---- races opened wide by a slow Redis link --------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_dlq_retry_is_not_undone_by_the_previous_attempts_clean_up(
    make_settings: Callable[..., Settings],
    redis_server: EmbeddedRedis,
    tokens: dict[str, str],
    make_stack: Callable[..., Stack],
) -> None:
    # The worker reaches Redis over a slow link, so the previous attempt's clean-up of arq's
    # keys lands well after its dead-letter write. An admin retries in between. Before: that
    # late clean-up deleted the retried job's queue entry and payload, and it never ran.
    with SlowLink(redis_server.port, 0.15) as link:
        api = make_stack(make_settings(), worker=False)
        slow_worker = make_stack(make_settings(redis_url=link.url), worker=True)
        description = "a phoenix [mock-fail:422*1]"
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            job_id = await submit(http, tokens["alice"], description)
            admin = auth(tokens["admin"])

            async def dead_lettered() -> bool:
                response = await http.get(f"/v1/admin/dlq/{job_id}", headers=admin)
                return response.status_code == 200

            await wait_until(dead_lettered, 20, "the dead-letter entry")
            retried = await http.post(f"/v1/admin/dlq/{job_id}/retry", headers=admin)
            assert retried.status_code == 202, retried.text
            done = await wait_for_status(http, job_id, tokens["alice"], FINAL, timeout_s=15)
        slow_worker.stop()  # before its link goes
    assert done["status"] == "completed", done


def script_sha(*names: str) -> bytes:
    """The SHA1 (as sent in EVALSHA) of the first of these Lua scripts that exists."""
    folder = resources.files("backend.store").joinpath("lua")
    for entry in folder.iterdir():
        if entry.name.rpartition("-")[0] in names:
            text = with_includes(entry.read_text(encoding="utf-8"))
            return hashlib.sha1(text.encode()).hexdigest().encode()
    raise AssertionError(f"no script named {names}")


@pytest.mark.timeout(60)
async def test_a_cancel_racing_the_start_still_aborts_the_call(
    make_settings: Callable[..., Settings],
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tokens: dict[str, str],
    make_stack: Callable[..., Stack],
    mock_pixellab: ThreadedUvicorn,
) -> None:
    # arq has handed the job to a worker, which read it queued; the worker's next request,
    # the one that starts the attempt, stalls on its link. A cancel arrives over a slow link
    # meanwhile. Before, a cancel was two scripts (off the queue, then final) with a round
    # trip between: the start landed between them, found the job still queued and made a
    # call that nothing aborted, although the job ended "cancelled".
    fast = make_stack(make_settings(), worker=False)  # submits and polls
    bob = tokens["bob"]
    description = "a raced raven [mock-latency:1500]"
    with SlowLink(redis_server.port, 0.0) as worker_link, SlowLink(redis_server.port, 0.15) as slow:
        worker_link.hold(script_sha("startAttempt", "transitionJob"))
        worker = make_stack(make_settings(redis_url=worker_link.url), worker=True)
        api = make_stack(make_settings(redis_url=slow.url), worker=False)  # the cancel
        async with (
            httpx.AsyncClient(base_url=fast.url, timeout=20) as http,
            httpx.AsyncClient(base_url=api.url, timeout=20) as slow_http,
        ):
            target = await submit(http, bob, description)
            assert await asyncio.to_thread(worker_link.holding.wait, 10), "no start was held"
            cancel = asyncio.create_task(slow_http.delete(f"/v1/jobs/{target}", headers=auth(bob)))

            async def off_the_queue() -> bool:
                return await redis.zscore(worker.settings.queue_name, target) is None

            await wait_until(off_the_queue, 10, "the cancel to take the job off the queue")
            worker_link.release()
            assert (await cancel).status_code == 202
            view = await wait_for_status(http, target, bob, FINAL, timeout_s=10)
            await asyncio.sleep(2.0)  # a call that nothing aborted would have ended by now
        worker.stop()
        api.stop()
    assert view["status"] == "cancelled", view
    assert "answered:200" not in mock_calls(mock_pixellab, description)


@pytest.mark.timeout(60)
async def test_a_worker_stopped_mid_clean_up_waits_for_its_last_writes(
    make_settings: Callable[..., Settings],
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tokens: dict[str, str],
    make_stack: Callable[..., Stack],
) -> None:
    # The job's image is cached after admission, so its attempt is a cache hit that gives
    # its unused PixelLab permit back as its very last write; that write stalls on the
    # worker's link while the worker is told to stop, again and again. Before: the shutdown
    # did not wait for it (the attempt had already left the runner's table) and closed the
    # clients under it, and then the loop with it still pending ("Task was destroyed but it
    # is pending", and a socket closed by the garbage collector in a later test).
    from backend.cache import CachedImage
    from backend.cache.redis_l1 import RedisL1
    from mocks.png import sprite_png

    api = make_stack(make_settings(), worker=False)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        job_id = await submit(http, tokens["alice"], "a cached cobra")
        stored = await admin_view(redis, job_id)
        image = CachedImage.new(
            stored["cache_key"], sprite_png(64, 64, b"cobra"), width=64, height=64, request={}
        )
        await RedisL1(redis, ttl_s=60).put(image)
        with SlowLink(redis_server.port, 0.0) as link:
            link.hold(script_sha("releasePermit"))
            worker = make_stack(make_settings(redis_url=link.url), worker=True)
            done = await wait_for_status(http, job_id, tokens["alice"], FINAL, timeout_s=10)
            assert await asyncio.to_thread(link.holding.wait, 10), "no permit release was held"
            stopping = asyncio.create_task(asyncio.to_thread(worker.stop_worker))
            await asyncio.sleep(1.2)  # the worker is told to stop every 0.5 s meanwhile
            waited = not stopping.done()  # the shutdown is still waiting for the write
            link.release()
            await asyncio.wait_for(stopping, 20)
    assert done["status"] == "completed", done
    assert waited, "the worker closed its clients under its last write"
    assert await redis.zcard(keys.PERMITS) == 0  # given back, not left to lapse


@pytest.mark.timeout(90)
async def test_a_worker_stopped_while_writing_an_outcome_still_writes_it(
    make_settings: Callable[..., Settings],
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tokens: dict[str, str],
    mock_pixellab: ThreadedUvicorn,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    # PixelLab has answered (a final 4xx); the dead-letter write is on its way when a deploy
    # stops the worker, and the link drops it. Before: the stop cancelled the write with the
    # job, the job stayed active until its lease lapsed, and the next worker paid PixelLab
    # for the same answer again (seen in the chaos run as 2 answered calls, 0 retryable).
    description = "a rejected newt [mock:failure][mock-latency:300]"
    url = start_api(make_settings(), processes)
    with SlowLink(redis_server.port, 0.0) as link:
        link.hold(script_sha("finishJob"))
        stopping = make_settings(
            redis_url=link.url, jobs={"lease_s": 3}, worker={"shutdown_grace_s": 0.3}
        )
        worker = start_worker(stopping, processes)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            job_id = await submit(http, tokens["alice"], description)
            assert await asyncio.to_thread(link.holding.wait, 20), "no outcome write was held"
            worker.send_signal(signal.SIGTERM)  # the deploy: past its grace, tasks are cancelled
            await asyncio.sleep(1.0)
            link.cut()  # the held write never reaches Redis
            link.release()
            assert await asyncio.to_thread(worker.wait, 20) == 0
            start_worker(make_settings(jobs={"lease_s": 3}), processes)
            done = await wait_for_status(http, job_id, tokens["alice"], FINAL, timeout_s=30)
            await asyncio.sleep(4)  # past a lease: a lost write would have been run again
    stored = await admin_view(redis, job_id)
    assert done["status"] == "failed" and done["error"]["type"] == "invalid_request", done
    answered = {k: n for k, n in mock_calls(mock_pixellab, description).items() if k != "abandoned"}
    assert sum(answered.values()) == 1, (answered, outcomes(stored))
    assert outcomes(stored) == ["failed"]
