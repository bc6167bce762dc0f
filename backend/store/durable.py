"""Durable writes: with replicas present, a write counts only once a replica has it (``WAIT``).

Redis replicates asynchronously, so a failover loses the writes the replica had not yet
received. A write that must survive one (an admitted job, a completion) runs its script and
then ``WAIT`` on the same connection. Whether the primary has replicas is read from
``INFO replication`` at most every ``PROBE_TTL_S`` per process; with none (a single Redis,
``dev``) no WAIT is sent and nothing changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from backend.store.scripts import ScriptCall, Scripts

PROBE_TTL_S = 2.0


@dataclass(frozen=True)
class Outcome:
    result: Any
    durable: bool  # reached min_replicas replicas, or there are none to wait for
    acked: int | None  # replicas that acknowledged; None when no WAIT was sent


class Durability:
    """Runs scripts with a ``WAIT`` for ``min_replicas`` replicas when the primary has any."""

    def __init__(
        self, redis: aioredis.Redis, scripts: Scripts, *, min_replicas: int, timeout_ms: int
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self.min_replicas = min_replicas
        self.timeout_ms = timeout_ms
        self._replicas = 0
        self._checked_at = -PROBE_TTL_S

    async def replicas(self) -> int:
        """The primary's connected replicas, read at most every ``PROBE_TTL_S``."""
        now = time.monotonic()
        if now - self._checked_at >= PROBE_TTL_S:
            info = await self._redis.info("replication")
            self._replicas = int(info.get("connected_slaves", 0))
            self._checked_at = now
        return self._replicas

    async def run_many(self, calls: list[ScriptCall]) -> tuple[list[Any], bool]:
        """``Scripts.run_many``, with a ``WAIT`` after them when the primary has replicas;
        the results, and whether enough replicas acknowledged them in time."""
        if self.min_replicas <= 0 or await self.replicas() == 0:
            return await self._scripts.run_many(calls), True
        results = await self._scripts.run_many(
            calls, then=("WAIT", self.min_replicas, self.timeout_ms)
        )
        acked = int(results.pop())
        if acked < self.min_replicas:
            self._checked_at = -PROBE_TTL_S
        return results, acked >= self.min_replicas

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Outcome:
        """Run script ``name``; raises what Redis raises."""
        if self.min_replicas <= 0 or await self.replicas() == 0:
            return Outcome(await self._scripts.run(name, keys, args), durable=True, acked=None)
        result, acked = await self._scripts.run_then_wait(
            name, keys, args, replicas=self.min_replicas, timeout_ms=self.timeout_ms
        )
        if acked < self.min_replicas:
            self._checked_at = -PROBE_TTL_S  # a replica may be gone: look again next time
        return Outcome(result, durable=acked >= self.min_replicas, acked=acked)
