"""Clients and the objects built on them, opened once per process and closed on exit.

The API's lifespan and the worker's ``on_startup`` both call ``open_resources``; each part
gets only the section of the settings it needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import structlog

from backend.cache import FirestoreL2, RedisL1, TieredCache, create_firestore_client
from backend.config import Settings
from backend.limits.estimates import QueueEstimates
from backend.limits.positions import PositionAnnouncer
from backend.limits.upstream import Upstream
from backend.store.connect import aclose_client, async_client
from backend.store.durable import Durability
from backend.store.eviction import check_eviction_policy
from backend.store.inputs import QUEUE_EXPIRY_S, InputStore
from backend.store.jobs import JobStore
from backend.store.scripts import Scripts
from backend.store.submissions import SubmitStore
from backend.store.webhooks import WebhookStore

log = structlog.get_logger(__name__)


def redis_client(url: str, *, max_connections: int = 200) -> aioredis.Redis:
    """Fail fast when Redis is away: an outage must answer 503 within a second, not hang.

    ``url`` may be a ``redis+sentinel://`` URL: the client then follows the primary.
    """
    return async_client(
        url,
        socket_connect_timeout=0.5,
        socket_timeout=2.0,
        health_check_interval=10,
        max_connections=max_connections,
        retry_on_timeout=False,
    )


@dataclass
class Resources:
    settings: Settings
    redis: aioredis.Redis
    cache_redis: aioredis.Redis
    scripts: Scripts
    jobs: JobStore
    cache: TieredCache
    estimates: QueueEstimates
    upstream: Upstream
    inputs: InputStore
    submissions: SubmitStore
    webhooks: WebhookStore
    _closers: list[object] = field(default_factory=list)

    def position_announcer(self) -> PositionAnnouncer:
        """Every API process and worker runs one; they take turns through Redis."""
        return PositionAnnouncer(
            self.redis,
            self.jobs,
            self.estimates,
            capacity=self.settings.limits.queue_capacity,
            interval_s=self.settings.jobs.position_interval_s,
        )

    async def close(self) -> None:
        for client in self._closers:
            with contextlib.suppress(Exception):
                await client.close()  # type: ignore[attr-defined]
        await aclose_client(self.redis)
        if self.cache_redis is not self.redis:
            await aclose_client(self.cache_redis)


async def open_resources(settings: Settings) -> Resources:
    """Raises ``EvictionPolicyError`` if the queue's Redis may evict (see its module)."""
    redis = redis_client(settings.redis_url)
    try:
        await check_eviction_policy(redis, allow_eviction=settings.redis.allow_eviction)
    except BaseException:
        await aclose_client(redis)
        raise
    cache_redis = (
        redis
        if settings.effective_cache_redis_url == settings.redis_url
        else redis_client(settings.effective_cache_redis_url)
    )
    scripts = Scripts(redis)
    with contextlib.suppress(Exception):  # Redis may be down at start; scripts load on first use
        await scripts.load()
    firestore = create_firestore_client(settings.firestore)
    l2 = None
    closers: list[object] = []
    if firestore is None:
        log.info("cache_l2_disabled", reason="SPRITEQ_FIRESTORE__PROJECT is not set; L1 only")
    else:
        closers.append(firestore)
        l2 = FirestoreL2(
            firestore,
            collection=settings.firestore.collection,
            ttl_days=settings.cache.l2_ttl_days,
            max_bytes=settings.cache.l2_max_bytes,
        )
    cache = TieredCache(
        RedisL1(cache_redis, ttl_s=settings.cache.l1_ttl_s),
        l2,
        timeout_s=settings.cache.timeout_s,
        write_timeout_s=settings.cache.write_timeout_s,
    )
    durability = Durability(
        redis,
        scripts,
        min_replicas=settings.redis.min_replicas_ack,
        timeout_ms=settings.redis.ack_timeout_ms,
    )
    # A priority is an offset on the job's score in arq's queue (lua/include/priority.lua).
    aging_ms = int(settings.jobs.priority_aging_s * 1000)
    jobs = JobStore(redis, scripts, queue_name=settings.queue_name, durability=durability,
                    aging_ms=aging_ms)  # fmt: skip
    return Resources(
        settings=settings,
        redis=redis,
        cache_redis=cache_redis,
        scripts=scripts,
        jobs=jobs,
        submissions=SubmitStore(jobs, scripts),
        webhooks=WebhookStore(redis, scripts),
        cache=cache,
        estimates=QueueEstimates(
            redis, settings.limits, max_concurrency=settings.pixellab.max_concurrency
        ),
        upstream=Upstream(redis, scripts, settings.pixellab),
        inputs=InputStore(redis, ttl_s=settings.jobs.keep_finished_s + QUEUE_EXPIRY_S),
        _closers=closers,
    )
