"""PixelLab as the whole deployment sees it: call permits, backpressure, and the pause.

- **Permits.** At most ``SPRITEQ_PIXELLAB__MAX_CONCURRENCY`` calls run at once across every
  worker. An attempt takes a permit before it starts (``acquirePermit``); one that finds
  none leaves its job at its place in the queue, and the worker looks again shortly. Permits
  are leases renewed with the attempt's, so a dead worker frees its permits within a lease.
- **Backpressure.** A 429 halves the number of permits (at most once a second); successful
  calls add them back, one per round of calls (AIMD, ``releasePermit``). The throttled job
  goes back to the queue without spending a retry (``backend.queue.runner``).
- **Pause.** A 401 or 402 means the account, not the job: the upstream is ``paused``, no
  permit is given, jobs wait in the queue. A worker probes ``GET /balance`` every
  ``SPRITEQ_PIXELLAB__PROBE_INTERVAL_S`` and resumes when the key works and the balance is
  above zero; ``POST /v1/admin/upstream/resume`` resumes at once.

**Balance.** One worker across the deployment reads ``GET /balance`` every
``SPRITEQ_PIXELLAB__BALANCE_INTERVAL_S`` and records it (``record_balance``); the API, which
never calls PixelLab itself, shows it to admins (``admin_view``).

Every change of state is a log event (``upstream_throttled``, ``upstream_paused``,
``upstream_resumed``) and a count in ``spritequeue_upstream_changes_total{state}``; the
state itself is a scrape-time gauge and the ``upstream`` field of ``GET /v1/queue``.
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Any

import redis.asyncio as aioredis
import structlog
from arq.constants import in_progress_key_prefix

from backend import metrics
from backend.config import PixelLabSettings
from backend.models import AdminUpstreamView, BalanceView, UpstreamState, UpstreamView
from backend.store import keys
from backend.store.scripts import ScriptCall, Scripts

log = structlog.get_logger(__name__)


class Permit(IntEnum):
    GRANTED = 1
    BUSY = 0  # every permit is held
    PAUSED = -1


class CallOutcome:
    OK = "ok"
    THROTTLED = "throttled"
    UNUSED = "none"


class Upstream:
    def __init__(self, redis: aioredis.Redis, scripts: Scripts, settings: PixelLabSettings) -> None:
        self._redis = redis
        self._scripts = scripts
        self._settings = settings

    @property
    def max_concurrency(self) -> int:
        return self._settings.max_concurrency

    async def acquire(self, token: str, job_id: str, *, lease_ms: int) -> Permit:
        """A call permit for the attempt ``token`` of ``job_id`` (see ``acquirePermit``)."""
        code, _ = await self._scripts.run(
            "acquirePermit",
            [keys.PERMITS, keys.UPSTREAM, in_progress_key_prefix + job_id],
            [token, _now_ms(), lease_ms, self.max_concurrency],
        )
        return Permit(int(code))

    async def release(self, token: str, outcome: str) -> None:
        """Give the permit back with what the call said about PixelLab (``releasePermit``)."""
        call = self.release_call(token, outcome)
        self.released(outcome, await self._scripts.run(call.name, call.keys, call.args))

    def release_call(self, token: str, outcome: str) -> ScriptCall:
        """``release`` as a call to run with others; hand its result to ``released``."""
        return ScriptCall(
            "releasePermit",
            [keys.PERMITS, keys.UPSTREAM],
            [token, outcome, _now_ms(), self.max_concurrency, keys.WAKE_CHANNEL],
        )

    def released(self, outcome: str, result: list[Any]) -> None:
        """Report a change of state that giving a permit back made (its script's result)."""
        before, after = (s.decode() if isinstance(s, bytes) else str(s) for s in result)
        if after != before:
            self._changed(UpstreamState(after), "rate_limited" if outcome == "throttled" else None)

    async def pause(self, reason: str) -> bool:
        """Stop every new call (a 401 or 402); True if this call paused it."""
        if await self.paused():
            return False
        await self._redis.hset(  # type: ignore[misc]
            keys.UPSTREAM,
            mapping={"state": UpstreamState.PAUSED.value, "reason": reason, "since": time.time()},
        )
        self._changed(UpstreamState.PAUSED, reason)
        return True

    async def resume(self, by: str) -> UpstreamView:
        """Lift a pause (a probe that found the key working, or an admin)."""
        before = await self._state()
        await self._redis.delete(keys.UPSTREAM)
        await self._redis.hset(  # type: ignore[misc]
            keys.UPSTREAM, mapping={"state": UpstreamState.OK.value, "since": time.time()}
        )
        await self._redis.publish(keys.WAKE_CHANNEL, "permit")  # the jobs that waited go now
        if before != UpstreamState.OK.value:
            self._changed(UpstreamState.OK, None, by=by)
        return await self.view()

    async def view(self) -> UpstreamView:
        fields = await self._redis.hmget(keys.UPSTREAM, ["state", "reason", "since"])  # type: ignore[misc]
        state, reason, since = (f.decode() if f is not None else None for f in fields)
        return UpstreamView(
            state=UpstreamState(state or UpstreamState.OK.value),
            reason=reason,
            since=float(since) if since else None,
        )

    async def record_balance(self, usd: float) -> None:
        """Keep the balance a worker just read, with when, for ``admin_view``."""
        await self._redis.hset(  # type: ignore[misc]
            keys.BALANCE, mapping={"usd": usd, "checked_at": time.time()}
        )

    async def admin_view(self) -> AdminUpstreamView:
        """``view`` with the last recorded balance (None before any worker read it)."""
        view = await self.view()
        usd, checked_at = await self._redis.hmget(keys.BALANCE, ["usd", "checked_at"])  # type: ignore[misc]
        balance = None
        if usd is not None and checked_at is not None:
            balance = BalanceView(usd=float(usd), checked_at=float(checked_at))
        return AdminUpstreamView(**view.model_dump(), balance=balance)

    async def paused(self) -> bool:
        return await self._state() == UpstreamState.PAUSED.value

    async def permits(self) -> tuple[int, int]:
        """(permits held now, permits there are now)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcount(keys.PERMITS, _now_ms(), "+inf")
            pipe.hget(keys.UPSTREAM, "limit")
            held, limit = await pipe.execute()
        return int(held), effective_limit(limit, self.max_concurrency)

    async def _state(self) -> str:
        state = await self._redis.hget(keys.UPSTREAM, "state")  # type: ignore[misc]
        return state.decode() if state else UpstreamState.OK.value

    def _changed(self, state: UpstreamState, reason: str | None, *, by: str | None = None) -> None:
        metrics.UPSTREAM_CHANGES.labels(state.value).inc()
        if state is UpstreamState.OK:
            log.info("upstream_resumed", by=by)
        elif state is UpstreamState.PAUSED:
            log.error("upstream_paused", reason=reason)
        else:
            log.warning("upstream_throttled", reason=reason)


def effective_limit(stored: bytes | str | None, max_concurrency: int) -> int:
    """Permits there are now: the setting, or fewer while throttled (never below 1)."""
    if stored is None:
        return max_concurrency
    return max(1, min(int(float(stored)), max_concurrency))


def _now_ms() -> int:
    return int(time.time() * 1000)
