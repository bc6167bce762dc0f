"""Delivers each finished job's webhook from the worker, never from a request.

A loop per worker claims the due deliveries (``store.webhooks``), POSTs each job's view to
its ``callback_url`` signed with ``SPRITEQ_WEBHOOKS__SECRET`` (``webhooks.signing``), and
records the outcome in the job's ``webhook`` field. A 2xx ends it (``delivered``); anything
else is tried again after a jittered, doubling backoff until ``max_age_s`` after the job
ended (``failed``). Each attempt re-checks the URL and connects to the address it checked
(``webhooks.urls``), and never follows a redirect. At least once: a receiver deduplicates
by ``X-Spritequeue-Delivery``, the same for every attempt of one final state.

The loop sleeps until the next delivery is due, at most ``IDLE_S``; a job that ends wakes it
through ``sq:wake`` (``queue.wakeups``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import structlog
from redis.exceptions import RedisError

from backend.config import WebhookSettings
from backend.models import JobRecord
from backend.options import WebhookState, WebhookView
from backend.retry.backoff import backoff_s
from backend.store.jobs import JobStore
from backend.store.webhooks import WebhookStore
from backend.webhooks.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign
from backend.webhooks.urls import UnsafeCallback, check_callback

log = structlog.get_logger(__name__)

IDLE_S = 5.0  # the longest sleep without a wake-up: a missed one costs at most this
BATCH = 20  # deliveries claimed (and sent concurrently) at a time
JITTER = 0.10
REDIS_RETRY_S = 1.0


def delivery_id(record: JobRecord) -> str:
    """One per final state: the same for every attempt, new after a DLQ retry ends again."""
    return f"{record.job_id}-{int((record.finished_at or 0) * 1000)}"


class WebhookDeliverer:
    def __init__(
        self,
        jobs: JobStore,
        store: WebhookStore,
        http: httpx.AsyncClient,
        settings: WebhookSettings,
    ) -> None:
        self._jobs = jobs
        self._store = store
        self._http = http
        self._settings = settings
        self._allowed = settings.http_hosts()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; Redis errors are waited out."""
        while True:
            try:
                next_due = await self.run_once()
            except (RedisError, OSError) as exc:
                log.warning("webhooks_redis_unavailable", error=type(exc).__name__)
                await asyncio.sleep(REDIS_RETRY_S)
                continue
            sleep = IDLE_S if next_due is None else min(max(next_due - time.time(), 0), IDLE_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):
                    await self._wake.wait()
            self._wake.clear()

    async def run_once(self) -> float | None:
        """Claim and send the due deliveries; returns when the next one is due (unix s)."""
        lease_ms = int((self._settings.timeout_s + 5) * 1000)
        while True:
            job_ids, next_due = await self._store.claim(lease_ms=lease_ms, limit=BATCH)
            if not job_ids:
                return next_due
            await asyncio.gather(*(self.deliver(job_id) for job_id in job_ids))

    async def deliver(self, job_id: str) -> None:
        """One attempt for one job; its outcome is recorded, never raised."""
        record = await self._jobs.get(job_id)
        if record is None or not record.status.finished or not record.callback_url:
            await self._store.drop(job_id)
            return
        state = record.webhook or WebhookView()
        attempts = state.attempts + 1
        status: int | None = None
        try:
            target = await check_callback(record.callback_url, self._allowed)
        except UnsafeCallback:
            log.warning("webhook_refused", job_id=job_id, reason="unsafe address")
            await self._record(record, WebhookView(state=WebhookState.FAILED, attempts=attempts,
                                                   last_status=None), due_at=None)  # fmt: skip
            return
        body = record.view().model_dump_json().encode()
        url, headers, extensions = target.pinned()
        secret = self._settings.secret.get_secret_value().encode() if self._settings.secret else b""
        headers |= {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            DELIVERY_HEADER: delivery_id(record),
            "User-Agent": "spritequeue-webhooks",
        }
        try:
            answer = await self._http.post(
                url, content=body, headers=headers, extensions=extensions,
                timeout=self._settings.timeout_s,
            )  # fmt: skip
            status = answer.status_code
        except httpx.HTTPError as exc:
            log.info("webhook_attempt_failed", job_id=job_id, error=type(exc).__name__)
        if status is not None and 200 <= status < 300:
            log.info("webhook_delivered", job_id=job_id, status=status, attempts=attempts)
            done = WebhookView(state=WebhookState.DELIVERED, attempts=attempts, last_status=status)
            await self._record(record, done, due_at=None)
            return
        age = time.time() - (record.finished_at or time.time())
        wait = backoff_s(attempts, base_s=self._settings.backoff_base_s,
                         max_s=self._settings.backoff_max_s, jitter=JITTER)  # fmt: skip
        if age + wait > self._settings.max_age_s:
            log.warning("webhook_failed", job_id=job_id, status=status, attempts=attempts)
            failed = WebhookView(state=WebhookState.FAILED, attempts=attempts, last_status=status)
            await self._record(record, failed, due_at=None)
            return
        log.info("webhook_retrying", job_id=job_id, status=status, attempts=attempts, in_s=wait)
        pending = WebhookView(state=WebhookState.PENDING, attempts=attempts, last_status=status)
        await self._record(record, pending, due_at=time.time() + wait)

    async def _record(self, record: JobRecord, state: WebhookView, *, due_at: float | None) -> None:
        await self._store.record(
            record.job_id, state, finished_at=str(record.finished_at), due_at=due_at
        )
