"""The metrics contract: names and labels, histogram buckets, and the stats percentiles."""

from __future__ import annotations

import itertools

import pytest
import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from backend import metrics
from backend.config import Settings
from backend.observability import QueueCollector, percentile
from backend.observability.collector import _GAUGES

# The metrics of docs/observability.md; renaming any of these breaks dashboards.
CONTRACT = {
    "spritequeue_jobs_submitted": ("counter", ("outcome",)),
    "spritequeue_jobs_finished": ("counter", ("status",)),
    "spritequeue_job_retries": ("counter", ("type",)),
    "spritequeue_job_duration_seconds": ("histogram", ()),
    "spritequeue_job_wait_seconds": ("histogram", ()),
    "spritequeue_submit_duration_seconds": ("histogram", ()),
    "spritequeue_cache_lookups": ("counter", ("layer", "result")),
    "spritequeue_cache_writes": ("counter", ("layer", "result")),
    "spritequeue_pixellab_requests": ("counter", ("outcome",)),
    "spritequeue_pixellab_request_duration_seconds": ("histogram", ()),
    "spritequeue_sse_connections": ("gauge", ()),
    "spritequeue_position_events": ("counter", ()),
    "spritequeue_auth_failures": ("counter", ("reason",)),
    "spritequeue_upstream_changes": ("counter", ("state",)),
    "spritequeue_dlq_dropped": ("counter", ()),
}
SCRAPE_TIME = {
    "spritequeue_queue_jobs": ["state"],
    "spritequeue_dlq_jobs": [],
    "spritequeue_workers_alive": [],
    "spritequeue_queue_capacity": [],
    "spritequeue_queue_state": ["state"],
    "spritequeue_scrape_redis_up": [],
    "spritequeue_upstream_state": ["state"],
    "spritequeue_pixellab_permits": ["kind"],
}


def test_process_collectors_keep_their_names_types_and_labels() -> None:
    found = {
        family.name: (family.type, collector._labelnames)
        for collector in vars(metrics).values()
        if isinstance(collector, Counter | Gauge | Histogram)
        for family in collector.describe()
    }
    assert found == CONTRACT
    # Registered in the process registry, which the API's /metrics and a worker's port serve.
    assert all(name in REGISTRY._names_to_collectors for name in CONTRACT)


def test_scrape_time_gauges_keep_their_names_and_labels() -> None:
    assert {name: labels for name, (_, labels) in _GAUGES.items()} == SCRAPE_TIME


@pytest.mark.parametrize(
    "histogram",
    [metrics.JOB_DURATION, metrics.JOB_WAIT, metrics.SUBMIT_LATENCY, metrics.PIXELLAB_DURATION],
)
def test_histogram_buckets_span_one_millisecond_to_ten_minutes(histogram: Histogram) -> None:
    bounds = histogram._upper_bounds
    assert bounds[0] == 0.001 and bounds[-2] == 600.0 and bounds[-1] == float("inf")
    assert all(b / a <= 2.5 for a, b in itertools.pairwise(bounds[:-1]))


def test_describing_the_queue_collector_does_not_touch_redis() -> None:
    # A client for a port nothing listens on: registering must not try to connect.
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.1)
    registry = CollectorRegistry()
    registry.register(
        QueueCollector(client, Settings.model_validate({"redis_url": "redis://127.0.0.1:1/0"}))
    )
    assert sorted(registry._names_to_collectors) == sorted(SCRAPE_TIME)
    client.close()


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([4.0], 0.95, 4.0),
        ([1.0, 2.0], 0.5, 1.0),
        ([1.0, 2.0, 3.0], 0.5, 2.0),
        ([float(n) for n in range(1, 21)], 0.95, 19.0),
        ([float(n) for n in range(1, 101)], 0.95, 95.0),
        ([float(n) for n in range(1, 101)], 1.0, 100.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected
