"""Locust scenarios for spritequeue: artists (repeats, SSE or polling, over-cap bursts), admins.

    .venv/bin/python load/make_tokens.py --users 50
    .venv/bin/locust -f load/locustfile.py --headless -u 50 -r 10 -t 60s \\
        --host http://127.0.0.1:8000

Expected refusals (429 user_limit / too_many_streams / rate_limited / quota_exceeded,
503 queue_full) are recorded as successes under their own names ("… [429 user_limit]"), so
the failure count is only the unexpected errors. Knobs (environment): SPRITEQ_LOAD_TOKENS
(tokens file),
SPRITEQ_LOAD_REPEAT_SHARE (share of repeated prompts, default 0.5),
SPRITEQ_LOAD_SSE_SHARE (share of artists following progress by SSE, default 0.5),
SPRITEQ_LOAD_FAIL_SHARE (share of prompts the mock fails, feeding the DLQ, default 0.02).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task

TOKENS_FILE = Path(os.environ.get("SPRITEQ_LOAD_TOKENS", "load/tokens.json"))
REPEAT_SHARE = float(os.environ.get("SPRITEQ_LOAD_REPEAT_SHARE", "0.5"))
SSE_SHARE = float(os.environ.get("SPRITEQ_LOAD_SSE_SHARE", "0.5"))
# Prompts the mock PixelLab fails on purpose, so the admins have a DLQ to work.
FAIL_SHARE = float(os.environ.get("SPRITEQ_LOAD_FAIL_SHARE", "0.02"))
EXPECTED_REFUSALS = {429, 503}
FINAL_EVENTS = {"completed", "failed", "cancelled"}
SUBJECTS = ["knight", "slime", "dragon", "wizard", "goblin", "potion", "chest", "tree", "bat"]
COLOURS = ["red", "blue", "green", "golden", "purple", "silver"]
POPULAR = [f"a {c} {s}" for c, s in itertools.product(COLOURS[:2], SUBJECTS[:4])]

_tokens: dict[str, Any] = {}
_artist_ids = itertools.count()


@events.init.add_listener
def _load_tokens(**_: Any) -> None:
    if not TOKENS_FILE.exists():
        raise SystemExit(f"{TOKENS_FILE} is missing: run load/make_tokens.py first")
    _tokens.update(json.loads(TOKENS_FILE.read_text()))


def _prompt() -> str:
    if random.random() < FAIL_SHARE:
        return f"a cursed {random.choice(SUBJECTS)} #{random.randrange(10**9)} [mock:failure]"
    if random.random() < REPEAT_SHARE:
        return random.choice(POPULAR)  # repeats: the cache and dedup paths
    return f"a {random.choice(COLOURS)} {random.choice(SUBJECTS)} #{random.randrange(10**9)}"


def _refusal_name(name: str, response: Any) -> str:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "?"
    return f"{name} [{response.status_code} {code}]"


class Artist(HttpUser):
    """Submits prompts and follows them to the end; sometimes bursts past the per-user cap."""

    wait_time = between(0.5, 2.0)
    weight = 10

    def on_start(self) -> None:
        artists = _tokens["artists"]
        token = artists[next(_artist_ids) % len(artists)]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.use_sse = random.random() < SSE_SHARE

    def submit(self) -> dict[str, Any] | None:
        body = {
            "description": _prompt(),
            "image_size": {"width": random.choice([32, 48, 64]), "height": 64},
        }
        with self.client.post(
            "/v1/jobs", json=body, headers=self.headers, name="POST /v1/jobs", catch_response=True
        ) as response:
            if response.status_code in (200, 202):
                response.success()
                job: dict[str, Any] = response.json()
                return job
            if response.status_code in EXPECTED_REFUSALS:
                response.success()
                events.request.fire(
                    request_type="REFUSED",
                    name=_refusal_name("POST /v1/jobs", response),
                    response_time=response.elapsed.total_seconds() * 1000,
                    response_length=0,
                    exception=None,
                    context={},
                )
                return None
            response.failure(f"unexpected {response.status_code}: {response.text[:200]}")
            return None

    @task(8)
    def generate(self) -> None:
        job = self.submit()
        if job is None or job["status"] == "completed":
            return
        if self.use_sse:
            self.follow_sse(job["job_id"])
        else:
            self.poll(job["job_id"])

    @task(1)
    def burst_past_the_cap(self) -> None:
        for _ in range(7):  # more than the per-user cap of 5: some 429s are expected
            self.submit()

    def follow_sse(self, job_id: str) -> None:
        url = f"/v1/jobs/{job_id}/events"
        with self.client.get(
            url, headers=self.headers, stream=True, name="GET /v1/jobs/{id}/events",
            catch_response=True, timeout=120,
        ) as response:  # fmt: skip
            if response.status_code in EXPECTED_REFUSALS:
                response.success()
                return self.poll(job_id)
            event = ""
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                    if event in FINAL_EVENTS:
                        response.success()
                        return None
            response.failure("stream closed before a final event")
        return None

    def poll(self, job_id: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = self.client.get(
                f"/v1/jobs/{job_id}", headers=self.headers, name="GET /v1/jobs/{id}"
            )
            if response.status_code != 200:
                return
            body = response.json()
            if body["status"] in FINAL_EVENTS:
                return
            time.sleep(min(float(response.headers.get("X-Poll-Interval", "1")), 2.0))


class Admin(HttpUser):
    """Watches the queue and works the dead-letter queue."""

    wait_time = between(2, 5)
    weight = 1

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {_tokens['admin']}"}

    @task(3)
    def queue(self) -> None:
        self.client.get("/v1/queue", name="GET /v1/queue")

    @task(2)
    def work_the_dlq(self) -> None:
        page = self.client.get("/v1/admin/dlq?limit=20", headers=self.headers,
                               name="GET /v1/admin/dlq").json()  # fmt: skip
        for entry in page.get("items", [])[:2]:
            with self.client.post(
                f"/v1/admin/dlq/{entry['job_id']}/retry", headers=self.headers,
                name="POST /v1/admin/dlq/{id}/retry", catch_response=True,
            ) as response:  # fmt: skip
                # 404: another admin got there first; 503: the queue is full. Both expected.
                if response.status_code in (202, 404, 503):
                    response.success()

    @task(1)
    def stats(self) -> None:
        self.client.get("/v1/admin/stats", headers=self.headers, name="GET /v1/admin/stats")
