"""The queue's Redis must never evict: check its ``maxmemory-policy`` before serving.

Queue data (slots, job records, arq's queue) that Redis evicts under memory pressure would
break every guarantee, so a process refuses to start on a queue Redis whose policy is not
``noeviction``, unless ``SPRITEQ_REDIS__ALLOW_EVICTION`` says the operator knows better.
Managed services that forbid ``CONFIG`` cannot be checked; that is logged, not fatal.
"""

from __future__ import annotations

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from backend.errors import Unavailable

log = structlog.get_logger(__name__)

REQUIRED_POLICY = "noeviction"


class EvictionPolicyError(Unavailable):
    """The queue's Redis may evict keys; raised at start-up, never on a request."""


async def eviction_policy(redis: aioredis.Redis) -> str | None:
    """The server's ``maxmemory-policy``; None when the server does not let us read it."""
    try:
        reply = await redis.config_get("maxmemory-policy")
    except ResponseError as exc:  # CONFIG renamed or forbidden (managed Redis, ACLs)
        log.warning("redis_policy_unchecked", reason=str(exc).split("\n")[0][:200])
        return None
    value = reply.get("maxmemory-policy") or reply.get(b"maxmemory-policy")
    if value is None:
        log.warning("redis_policy_unchecked", reason="CONFIG GET returned no maxmemory-policy")
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def check_eviction_policy(redis: aioredis.Redis, *, allow_eviction: bool) -> None:
    """Raises ``EvictionPolicyError`` if the queue's Redis may evict and that is not allowed.

    A Redis that is down at start is not an error here (the process starts and answers 503
    until it is back); the check is then skipped with a log line.
    """
    try:
        policy = await eviction_policy(redis)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        log.warning("redis_policy_unchecked", reason=f"Redis unavailable: {type(exc).__name__}")
        return
    if policy is None or policy == REQUIRED_POLICY:
        return
    if allow_eviction:
        log.warning("redis_eviction_allowed", policy=policy)
        return
    raise EvictionPolicyError(
        f"the queue's Redis runs with maxmemory-policy {policy!r}; it must be "
        f"{REQUIRED_POLICY!r}, or queue data (slots, jobs) can be evicted under memory "
        "pressure. Set it (CONFIG SET maxmemory-policy noeviction, or in the server's "
        "configuration), point the L1 cache at its own Redis with SPRITEQ_CACHE_REDIS_URL, "
        "or set SPRITEQ_REDIS__ALLOW_EVICTION=true to start anyway."
    )
