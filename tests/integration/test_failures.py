"""Failures end to end through the mock's scenarios: retries, dead-letters, cancel, admin DLQ."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backend.config import Settings
from fixtures.factories import auth, sprite_request, wait_for_status
from fixtures.stack import WorkerThread, settings_env
from tests.conftest import Stack

FINAL = {"completed", "failed", "cancelled"}


async def submit(http: httpx.AsyncClient, token: str, description: str, **fields: Any) -> str:
    response = await http.post(
        "/v1/jobs", json=sprite_request(description, **fields), headers=auth(token)
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


async def dlq_entry(http: httpx.AsyncClient, admin: str, job_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/admin/dlq/{job_id}", headers=auth(admin))
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()
    return entry


@pytest.mark.parametrize(
    ("marker", "error_type", "attempts"),
    [
        ("server_error", "server_error", 2),
        ("failure", "invalid_request", 1),
        # auth (401) and insufficient_credits (402) pause PixelLab calls instead: the job is
        # kept (tests/integration/test_upstream.py).
    ],
)
async def test_classified_failures_retry_or_dead_letter(
    client: httpx.AsyncClient,
    tokens: dict[str, str],
    marker: str,
    error_type: str,
    attempts: int,
) -> None:
    job_id = await submit(client, tokens["alice"], f"a bat [mock:{marker}]")
    done = await wait_for_status(client, job_id, tokens["alice"], FINAL)
    assert done["status"] == "failed"
    assert done["error"]["type"] == error_type
    assert done["attempts"] == attempts
    entry = await dlq_entry(client, tokens["admin"], job_id)
    assert entry["error"]["type"] == error_type and entry["attempts"] == attempts
    assert entry["user"] == "alice" and entry["request"]["description"].startswith("a bat")
    assert [a["outcome"] for a in entry["history"]] == ["failed"] * attempts
    queue = (await client.get("/v1/queue")).json()
    assert queue["waiting"] == queue["active"] == 0  # the slot was released


async def test_rate_limited_waits_for_retry_after_until_the_throttle_ceiling(
    make_settings: Callable[..., Settings],
    make_stack: Callable[..., Stack],
    tokens: dict[str, str],
) -> None:
    # 429s spend no retry; they defer the job (Retry-After: 1 from the mock) until they have
    # deferred it throttle_max_wait_s in all, and only then is it a failure.
    stack = make_stack(make_settings(pixellab={"throttle_max_wait_s": 2.5}))
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        job_id = await submit(client, tokens["alice"], "a crab [mock:rate_limited]")
        done = await wait_for_status(client, job_id, tokens["alice"], FINAL)
        assert done["error"]["type"] == "rate_limited" and done["attempts"] == 3
        entry = await dlq_entry(client, tokens["admin"], job_id)
    assert entry["failures"] == 1  # only the last, past the ceiling
    first, second, third = entry["history"]
    assert [a["outcome"] for a in entry["history"]] == ["requeued", "requeued", "failed"]
    for before, after in ((first, second), (second, third)):
        gap = after["started_at"] - before["finished_at"]
        assert 1.0 <= gap < 2.0, gap  # Retry-After: 1; jitter adds at most 10 %


async def test_timeout_is_classified_and_retried(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    began = time.monotonic()
    job_id = await submit(client, tokens["alice"], "a ghost [mock:timeout]", timeout_s=0.5)
    done = await wait_for_status(client, job_id, tokens["alice"], FINAL)
    assert done["status"] == "failed" and done["error"]["type"] == "timeout"
    assert done["attempts"] == 2 and done["error"]["retryable"] is False
    assert time.monotonic() - began < 5


async def test_cancel_running_job_abandons_the_call(
    client: httpx.AsyncClient, tokens: dict[str, str], mock_pixellab: Any
) -> None:
    job_id = await submit(client, tokens["alice"], "a slow owl [mock-latency:5000]")
    await wait_for_status(client, job_id, tokens["alice"], {"active"})
    await asyncio.sleep(0.2)  # let the call reach PixelLab
    cancelled = await client.delete(f"/v1/jobs/{job_id}", headers=auth(tokens["alice"]))
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    queue = (await client.get("/v1/queue")).json()
    assert queue["waiting"] == queue["active"] == 0
    await asyncio.sleep(1.0)
    after = (await client.get(f"/v1/jobs/{job_id}", headers=auth(tokens["alice"]))).json()
    assert after["status"] == "cancelled" and after["result"] is None
    again = await client.delete(f"/v1/jobs/{job_id}", headers=auth(tokens["alice"]))
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_finished"


async def test_admin_routes_need_an_admin_token(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    for method, path in [
        ("GET", "/v1/admin/dlq"),
        ("GET", "/v1/admin/dlq/x"),
        ("POST", "/v1/admin/dlq/x/retry"),
        ("DELETE", "/v1/admin/dlq/x"),
        ("GET", "/v1/admin/stats"),
    ]:
        assert (await client.request(method, path)).status_code == 401
        user = await client.request(method, path, headers=auth(tokens["alice"]))
        assert user.status_code == 403, path
    missing = await client.get("/v1/admin/dlq/nope", headers=auth(tokens["admin"]))
    assert missing.status_code == 404


async def test_dlq_list_is_newest_first_and_paginated(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    ids = []
    for n in range(3):
        ids.append(await submit(client, tokens["alice"], f"bad {n} [mock:failure]"))
        await wait_for_status(client, ids[-1], tokens["alice"], FINAL)
    admin = auth(tokens["admin"])
    page = (await client.get("/v1/admin/dlq?limit=2", headers=admin)).json()
    assert [e["job_id"] for e in page["items"]] == [ids[2], ids[1]]
    assert page["next_cursor"]
    rest = (
        await client.get(f"/v1/admin/dlq?limit=2&cursor={page['next_cursor']}", headers=admin)
    ).json()
    assert [e["job_id"] for e in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    assert (await client.delete(f"/v1/admin/dlq/{ids[1]}", headers=admin)).status_code == 204
    assert (await client.delete(f"/v1/admin/dlq/{ids[1]}", headers=admin)).status_code == 404
    left = (await client.get("/v1/admin/dlq", headers=admin)).json()["items"]
    assert [e["job_id"] for e in left] == [ids[2], ids[0]]


async def test_admin_retry_requeues_and_bypasses_the_user_cap(
    make_settings: Callable[..., Settings], make_stack: Any, tokens: dict[str, str]
) -> None:
    # PixelLab rejects the first call (dead-lettered); the admin's retry then succeeds.
    good = make_settings(limits={"per_user": 1})
    stack = make_stack(good, worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        with WorkerThread(good):
            job_id = await submit(http, tokens["alice"], "a fox [mock-fail:422*1]")
            failed = await wait_for_status(http, job_id, tokens["alice"], FINAL)
        assert failed["error"]["type"] == "invalid_request"
        # alice fills her cap (1) with another job; the admin retry must still be admitted.
        await submit(http, tokens["alice"], "a wolf")
        retried = await http.post(f"/v1/admin/dlq/{job_id}/retry", headers=auth(tokens["admin"]))
        assert retried.status_code == 202 and retried.json()["job_id"] == job_id
        listed = (await http.get("/v1/admin/dlq", headers=auth(tokens["admin"]))).json()
        assert job_id not in [e["job_id"] for e in listed["items"]]
        with WorkerThread(good):
            done = await wait_for_status(http, job_id, tokens["alice"], FINAL)
        assert done["status"] == "completed" and done["result"]["width"] == 64
        gone = await http.post(f"/v1/admin/dlq/{job_id}/retry", headers=auth(tokens["admin"]))
        assert gone.status_code == 404


async def test_dlq_from_the_command_line(
    client: httpx.AsyncClient, tokens: dict[str, str], settings: Settings
) -> None:
    job_id = await submit(client, tokens["alice"], "a rat [mock:failure]")
    await wait_for_status(client, job_id, tokens["alice"], FINAL)
    env = settings_env(settings)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "backend.cli", "dlq", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert [e["job_id"] for e in json.loads(listed.stdout)["items"]] == [job_id]
    assert cli("delete", job_id).returncode == 0
    missing = cli("retry", job_id)
    assert missing.returncode == 1 and "no such dead-letter entry" in missing.stderr
