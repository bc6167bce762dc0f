"""Queue gauges read from Redis at scrape time, for the API's and every worker's ``/metrics``.

A custom collector rather than gauges set by a polling loop: the figures are as fresh as the
scrape, no process does Redis work nobody reads, and every replica reports the same numbers
(aggregate them with ``max``). prometheus-client calls ``collect()`` synchronously, so it
uses a small synchronous client with short timeouts, one pipelined round trip (plus the
queue-state swap), and on any Redis failure exports ``spritequeue_scrape_redis_up 0``
instead of raising, so the process's own counters are still scraped during an outage.

A scrape also notices a change of queue state and logs ``queue_state_changed`` exactly once
across processes, as ``QueueEstimates`` does on the request path: both swap the state into
``keys.QUEUE_STATE`` with ``SET … GET``, and only the process that reads back the old value
logs. The line has the same fields on both paths.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import redis
import structlog
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.config import LimitSettings, Settings
from backend.limits.estimates import HEARTBEAT_STALE_S, queue_state
from backend.limits.upstream import effective_limit
from backend.models import QueueState, UpstreamState
from backend.store import keys
from backend.store.connect import sync_client

log = structlog.get_logger(__name__)

SCRAPE_TIMEOUT_S = 0.5

# name -> (help, label names); the names are part of the metrics contract (docs/observability.md)
_GAUGES: dict[str, tuple[str, list[str]]] = {
    "spritequeue_queue_jobs": (
        "Jobs now waiting, active (running) and inflight (both).",
        ["state"],
    ),
    "spritequeue_dlq_jobs": ("Dead-lettered jobs within their retention.", []),
    "spritequeue_workers_alive": ("Workers with a fresh heartbeat.", []),
    "spritequeue_queue_capacity": ("The global cap on inflight jobs.", []),
    "spritequeue_queue_state": (
        "1 for the current queue state (ok, warning, critical).",
        ["state"],
    ),
    "spritequeue_scrape_redis_up": ("1 if this scrape could read Redis, else 0.", []),
    "spritequeue_upstream_state": (
        "1 for PixelLab's current state as the service sees it (ok, throttled, paused).",
        ["state"],
    ),
    "spritequeue_pixellab_permits": (
        "PixelLab call permits: held now, and the limit now (lower while throttled).",
        ["kind"],
    ),
}


@dataclass(frozen=True)
class QueueFigures:
    inflight: int
    active: int
    dlq: int
    workers: int
    state: QueueState
    upstream: UpstreamState
    permits_held: int
    permits_limit: int

    @property
    def waiting(self) -> int:
        return max(self.inflight - self.active, 0)


def note_state_change(
    client: redis.Redis, state: QueueState, inflight: int, limits: LimitSettings
) -> bool:
    """Swap in ``state``; log ``queue_state_changed`` if this process saw it change.

    Returns whether it logged. Raises redis errors.
    """
    # redis-py types sync and async replies as one union; this client is synchronous.
    previous = cast("bytes | None", client.set(keys.QUEUE_STATE, state.value, get=True))
    before = previous.decode() if previous is not None else QueueState.OK.value
    if before == state.value:
        return False
    level = log.info if state is QueueState.OK else log.warning
    level(
        "queue_state_changed",
        state=state.value,
        previous=before,
        inflight=inflight,
        capacity=limits.queue_capacity,
        warning_at=limits.warning_at,
    )
    return True


def sync_redis_client(url: str) -> redis.Redis:
    """A client that gives up fast: a scrape must answer even when Redis does not
    (Sentinel-aware, see ``store.connect``)."""
    return sync_client(
        url,
        socket_connect_timeout=SCRAPE_TIMEOUT_S,
        socket_timeout=SCRAPE_TIMEOUT_S,
        retry_on_timeout=False,
    )


class QueueCollector(Collector):
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._limits = settings.limits
        self._dlq_retention_s = settings.jobs.dlq_retention_s
        self._max_concurrency = settings.pixellab.max_concurrency

    def describe(self) -> Iterable[Metric]:
        # Without this, registering would call collect() and touch Redis.
        return [
            GaugeMetricFamily(name, doc, labels=labels) for name, (doc, labels) in _GAUGES.items()
        ]

    def read(self) -> QueueFigures:
        """The figures, in one round trip; raises redis errors."""
        now = time.time()
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.INFLIGHT)
            pipe.zcard(keys.ACTIVE)
            pipe.zcount(keys.DLQ, int((now - self._dlq_retention_s) * 1000), "+inf")
            pipe.zcount(keys.WORKERS, int((now - HEARTBEAT_STALE_S) * 1000), "+inf")
            pipe.zcount(keys.PERMITS, int(now * 1000), "+inf")
            pipe.hmget(keys.UPSTREAM, ["state", "limit"])
            pipe.get(keys.QUEUE_STATE)
            *counts, permits, (upstream, limit), last_state = pipe.execute()
        inflight, active, dlq, workers = (int(n) for n in counts)
        state = queue_state(inflight, self._limits)
        if last_state is None or last_state.decode() != state.value:
            note_state_change(self._redis, state, inflight, self._limits)
        return QueueFigures(
            inflight, active, dlq, workers, state,
            UpstreamState(upstream.decode() if upstream else UpstreamState.OK.value),
            int(permits), effective_limit(limit, self._max_concurrency),
        )  # fmt: skip

    def collect(self) -> Iterable[Metric]:
        try:
            figures: QueueFigures | None = self.read()
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics_redis_unavailable", error=type(exc).__name__)
            figures = None
        families = {
            name: GaugeMetricFamily(name, doc, labels=labels)
            for name, (doc, labels) in _GAUGES.items()
        }
        families["spritequeue_scrape_redis_up"].add_metric([], 0 if figures is None else 1)
        families["spritequeue_queue_capacity"].add_metric([], self._limits.queue_capacity)
        if figures is not None:
            jobs = families["spritequeue_queue_jobs"]
            jobs.add_metric(["waiting"], figures.waiting)
            jobs.add_metric(["active"], figures.active)
            jobs.add_metric(["inflight"], figures.inflight)
            families["spritequeue_dlq_jobs"].add_metric([], figures.dlq)
            families["spritequeue_workers_alive"].add_metric([], figures.workers)
            for state in QueueState:
                families["spritequeue_queue_state"].add_metric(
                    [state.value], 1 if state is figures.state else 0
                )
            for upstream in UpstreamState:
                families["spritequeue_upstream_state"].add_metric(
                    [upstream.value], 1 if upstream is figures.upstream else 0
                )
            permits = families["spritequeue_pixellab_permits"]
            permits.add_metric(["held"], figures.permits_held)
            permits.add_metric(["limit"], figures.permits_limit)
        # Families with no sample (Redis down) are left out rather than exported empty.
        return [family for family in families.values() if family.samples]


def metrics_text(*registries: CollectorRegistry) -> bytes:
    """Prometheus text for the process's collectors plus ``registries`` (names never overlap)."""
    return b"".join(generate_latest(registry) for registry in (REGISTRY, *registries))


def queue_registry(settings: Settings) -> tuple[CollectorRegistry, redis.Redis]:
    """A registry with one ``QueueCollector``, for an app's ``/metrics``; and its client to close.

    Per app rather than in the global registry: tests run several apps in one process, each
    on its own settings, and ``metrics_text`` serves the global registry alongside it.
    """
    client = sync_redis_client(settings.redis_url)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(QueueCollector(client, settings))
    return registry, client


def serve_worker_metrics(settings: Settings, port: int, host: str) -> redis.Redis:
    """Register the queue collector (once per process) and serve ``/metrics`` on ``port``.

    Returns the collector's Redis client, for the caller to close at exit.
    """
    client = sync_redis_client(settings.redis_url)
    REGISTRY.register(QueueCollector(client, settings))
    start_http_server(port, addr=host)
    return client
