"""Failed token look-ups per client address per minute, counted in Redis across every API process.

The API answers the first ``allowance`` failures of a minute from one address with a plain
``401``; past that, each further failure waits a little longer (``delay_s``) and is answered
``429`` with ``Retry-After`` to the end of the minute. Only failures are counted and slowed:
a request with a valid token never touches this counter, so one misconfigured client behind
a shared address does not lock out its neighbours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from backend.store import keys

WINDOW_S = 60


@dataclass(frozen=True)
class Verdict:
    failures: int  # this minute's failures from the address, this one included
    throttled: bool
    delay_s: float  # how long to hold the answer
    retry_after_s: int  # until the minute's counter resets


def delay_s(over: int, *, base_s: float = 0.1, max_s: float = 3.0) -> float:
    """The wait for the ``over``-th failure past the allowance: doubling from ``base_s``."""
    return 0.0 if over <= 0 else min(max_s, base_s * 2 ** min(over - 1, 16))


class AuthFailures:
    def __init__(self, redis: aioredis.Redis, *, allowance: int, max_delay_s: float) -> None:
        self._redis = redis
        self.allowance = allowance
        self._max_delay_s = max_delay_s

    async def record(self, address: str) -> Verdict:
        """Count one failed look-up from ``address`` and say how to answer it."""
        now = time.time()
        minute = int(now // WINDOW_S)
        key = keys.auth_failures(address, minute)
        async with self._redis.pipeline(transaction=True) as multi:
            multi.incr(key)
            multi.expire(key, 2 * WINDOW_S)
            failures, _ = await multi.execute()
        over = int(failures) - self.allowance
        return Verdict(
            failures=int(failures),
            throttled=over > 0,
            delay_s=delay_s(over, max_s=self._max_delay_s),
            retry_after_s=max(1, int((minute + 1) * WINDOW_S - now) + 1),
        )
