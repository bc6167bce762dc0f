"""Scrape-time queue gauges, the queue-state change event and the admin statistics."""

from __future__ import annotations

from backend.observability.collector import (
    QueueCollector,
    metrics_text,
    queue_registry,
    serve_worker_metrics,
    sync_redis_client,
)
from backend.observability.stats import admin_stats, percentile

__all__ = [
    "QueueCollector",
    "admin_stats",
    "metrics_text",
    "percentile",
    "queue_registry",
    "serve_worker_metrics",
    "sync_redis_client",
]
