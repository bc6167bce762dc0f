"""Every Prometheus collector, defined once. Names and labels are part of the contract."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# 1 ms … 10 min, roughly x2.5 per bucket.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip

JOBS_SUBMITTED = Counter(
    "spritequeue_jobs_submitted_total",
    "Submissions by outcome.",
    # accepted, deduplicated, cache_hit, queue_full, user_limit, invalid, rate_limited,
    # quota_exceeded
    ["outcome"],
)
JOBS_FINISHED = Counter(
    "spritequeue_jobs_finished_total", "Jobs that reached a final state.", ["status"]
)
JOB_RETRIES = Counter(
    "spritequeue_job_retries_total", "Retries scheduled, by error type.", ["type"]
)
JOB_DURATION = Histogram(
    "spritequeue_job_duration_seconds", "Run time of a job attempt.", buckets=LATENCY_BUCKETS
)
JOB_WAIT = Histogram(
    "spritequeue_job_wait_seconds", "Time from admission to start.", buckets=LATENCY_BUCKETS
)
SUBMIT_LATENCY = Histogram(
    "spritequeue_submit_duration_seconds", "POST /v1/jobs handling time.", buckets=LATENCY_BUCKETS
)
CACHE_LOOKUPS = Counter(
    "spritequeue_cache_lookups_total",
    "Cache look-ups.",
    ["layer", "result"],  # hit|miss|error
)
CACHE_WRITES = Counter(
    "spritequeue_cache_writes_total",
    "Cache writes.",
    ["layer", "result"],  # ok|error|too_large
)
PIXELLAB_REQUESTS = Counter(
    "spritequeue_pixellab_requests_total", "PixelLab calls by outcome.", ["outcome"]
)
PIXELLAB_DURATION = Histogram(
    "spritequeue_pixellab_request_duration_seconds",
    "PixelLab call latency.",
    buckets=LATENCY_BUCKETS,
)
SSE_CONNECTIONS = Gauge("spritequeue_sse_connections", "Open SSE streams in this process.")
POSITION_EVENTS = Counter(
    "spritequeue_position_events_total",
    "Progress events announcing a waiting job's new position or wait (this process's share).",
)
AUTH_FAILURES = Counter(
    "spritequeue_auth_failures_total",
    "Requests refused for their bearer token.",
    ["reason"],  # missing, invalid, throttled (invalid, past the address's allowance: 429)
)
UPSTREAM_CHANGES = Counter(
    "spritequeue_upstream_changes_total",
    "Changes of PixelLab's state as this process saw them, by the state entered.",
    ["state"],  # ok, throttled, paused
)
DLQ_DROPPED = Counter(
    "spritequeue_dlq_dropped_total",
    "Dead-letter entries dropped, oldest first, to keep the DLQ within SPRITEQ_JOBS__DLQ_MAX "
    "(this process's share; sq:stats dlq_dropped counts across processes).",
)
