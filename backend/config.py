"""Settings: one pydantic-settings model, env prefix ``SPRITEQ_``, nested sections with ``__``.

Each component receives only its own section; nothing here is read at import time.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.errors import ConfigurationError

MIN_ADMIN_TOKEN_CHARS = 32
# The password in a URL's user-info: redis://user:PASSWORD@host, rediss://:PASSWORD@host, …
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/@:]*:)[^\s/]+@", re.I)


def hide_url_password(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


class RedisSettings(BaseModel):
    # The queue's Redis must run with maxmemory-policy noeviction; a process refuses to start
    # otherwise, unless this is set (backend.store.eviction).
    allow_eviction: bool = False
    min_replicas_ack: int = Field(
        1,
        ge=0,
        description=(
            "When the queue's primary has replicas, a submit is answered 202 only after this "
            "many replicas acknowledged the new job (Redis WAIT), else 503 unavailable; a "
            "completion waits the same way (logged if not acknowledged). No replicas, or 0: "
            "no WAIT is sent."
        ),
    )
    ack_timeout_ms: int = Field(
        100,
        ge=1,
        description="How long a durable write waits for the replicas' acknowledgement (WAIT).",
    )


class PixelLabSettings(BaseModel):
    base_url: str = "https://api.pixellab.ai/v1"
    api_key: SecretStr | None = None
    connect_timeout_s: float = 5.0
    # At least WorkerSettings.max_jobs: a smaller pool makes jobs queue for a connection, so
    # 500 slow jobs ran 100 at a time (docs/benchmarks.md).
    max_connections: int = 500
    # PixelLab calls at once across every worker (leased permits in Redis).
    max_concurrency: int = Field(10, ge=1)
    # How long 429s may keep deferring one job (their total) before it fails as rate_limited.
    throttle_max_wait_s: float = Field(3600.0, ge=0)
    # While paused (401/402), how often one process asks GET /balance whether to resume.
    probe_interval_s: float = Field(30.0, gt=0)
    balance_interval_s: float = Field(
        300.0,
        gt=0,
        description="How often one worker across the deployment reads PixelLab's "
        "`GET /balance` and records it in Redis for the admin page "
        "(`GET /v1/admin/upstream`).",
    )


class FirestoreSettings(BaseModel):
    project: str | None = None
    collection: str = "sprite_cache"
    database: str = "(default)"
    timeout_s: float = 2.0


class CacheSettings(BaseModel):
    l1_ttl_s: int = 24 * 3600
    l2_ttl_days: int = 30
    timeout_s: float = 0.5
    write_timeout_s: float = 3.0
    # Firestore documents are limited to 1 MiB; keep a margin for the other fields.
    l2_max_bytes: int = 900_000


class LimitSettings(BaseModel):
    queue_capacity: int = Field(500, ge=1)
    per_user: int = Field(5, ge=1)
    dedup_window_s: float = Field(10, gt=0)
    warning_at: int = Field(400, ge=1)
    max_body_bytes: int = 64 * 1024
    max_image_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest `POST /v1/jobs` body that carries input images (base64 PNGs); "
        "a body without images keeps the `max_body_bytes` limit. Larger bodies are `413`.",
    )
    max_sse_per_user: int = Field(10, ge=1)
    submits_per_minute: int = Field(
        60,
        ge=0,
        description="Submissions a user may make per minute, cache hits and deduplicated ones "
        "included; more are `429 rate_limited` with `Retry-After`, and write nothing to Redis. "
        "0 turns the limit off.",
    )
    daily_generations: int = Field(
        500,
        ge=0,
        description="Jobs a user may send to PixelLab per UTC day (cache misses; cache hits and "
        "deduplicated submissions are free, a job cancelled before its call is refunded, an "
        "admin's DLQ retry is not charged); more are `429 quota_exceeded` with `Retry-After` "
        "to the next UTC midnight. 0 turns the quota off.",
    )


class JobSettings(BaseModel):
    timeout_s: float = Field(600, gt=0)
    # The shortest per-job ``timeout_s`` a submission may ask for: PixelLab takes 10-20 s a
    # generation, so anything much shorter can only time out and spend a retry.
    min_timeout_s: float = Field(5.0, gt=0)
    max_retries: int = Field(1, ge=0)
    backoff_base_s: float = 2.0
    backoff_max_s: float = 60.0
    jitter: float = 0.10
    # A running job's lease; a live worker renews it, a dead one lets it lapse so another
    # worker picks the job up (BullMQ's stalled-job check).
    lease_s: float = 30.0
    max_stalls: int = 2
    # How long a finished job's record (and its event stream) is kept.
    keep_finished_s: int = 24 * 3600
    dlq_retention_s: int = 7 * 24 * 3600
    dlq_max: int = Field(
        10_000,
        ge=1,
        description="Dead-letter entries kept; beyond it the oldest are dropped (counted in "
        "`spritequeue_dlq_dropped_total` and `dlq_dropped` of `/v1/admin/stats`).",
    )
    # How often waiting jobs' positions and waits are refreshed and pushed to their streams
    # (once per interval across all processes; see backend.limits.positions).
    position_interval_s: float = Field(1.0, gt=0)
    priority_aging_s: float = Field(
        300.0,
        gt=0,
        description="A waiting job moves up one priority level (low, normal, high) each time "
        "it has waited this long, so nothing starves: a high job runs before normal ones up "
        "to this much older than it.",
    )


class WebhookSettings(BaseModel):
    secret: SecretStr | None = Field(
        None,
        description="Signs every delivery (`X-Spritequeue-Signature`, HMAC-SHA256). Unset: a "
        "submission with a `callback_url` is a 422.",
    )
    allow_http_hosts: str = Field(
        "",
        description="Comma-separated hosts (names or addresses) a `callback_url` may reach "
        "over plain `http`, or at a private, loopback or link-local address; everything "
        "else must be `https` to a public address.",
    )
    backoff_base_s: float = Field(
        5.0, gt=0, description="First wait between delivery attempts; doubles each time."
    )
    backoff_max_s: float = Field(
        3600.0, gt=0, description="Longest wait between delivery attempts (±10 % jitter)."
    )
    max_age_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="Attempts stop this long after the job ended; the delivery is then `failed`.",
    )
    timeout_s: float = Field(10.0, gt=0, description="One delivery attempt's HTTP timeout.")

    def http_hosts(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.allow_http_hosts.split(",") if h.strip())


class WorkerSettings(BaseModel):
    max_jobs: int = Field(500, ge=1)
    # arq sleeps this long between polls of the queue, so a new job waits half of it on
    # average before a worker sees it: 0.01 s is ~5 ms for ~100 cheap polls/s per worker
    # (measured in docs/benchmarks.md).
    poll_delay_s: float = 0.01
    # An idle worker waits for a wake-up (backend.queue.wakeups) and polls on its own only
    # this often, or when the next deferred job is due; a busy one reads arq's abort set on
    # an abort message and this often.
    idle_poll_s: float = Field(2.0, gt=0)
    shutdown_grace_s: float = 30.0
    heartbeat_s: float = 5.0


class SSESettings(BaseModel):
    ping_s: float = 30.0


class ServerSettings(BaseModel):
    """What ``spritequeue api`` passes to uvicorn."""

    limit_concurrency: int = Field(
        2000,
        ge=1,
        description="Connections and requests one API process serves at once (open SSE streams "
        "included); beyond it uvicorn answers `503` at once instead of queueing without bound.",
    )
    timeout_keep_alive_s: float = Field(
        75,
        gt=0,
        description="How long an idle keep-alive connection is kept open. Above common client "
        "and load-balancer idle timeouts (httpx 5 s, AWS ALB 60 s), so a client never reuses "
        "a connection just as it is closed.",
    )
    timeout_graceful_shutdown_s: float = Field(
        5,
        gt=0,
        description="On shutdown, how long open requests (and SSE streams) may finish.",
    )
    backlog: int = Field(
        2048, ge=1, description="Pending TCP connections the listening socket queues."
    )


class AuthSettings(BaseModel):
    # Failed token look-ups a client address may make in a minute before each further one
    # is slowed (a growing delay, up to failure_delay_max_s) and answered 429.
    failures_per_minute: int = Field(10, ge=1)
    failure_delay_max_s: float = Field(3.0, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPRITEQ_", env_nested_delimiter="__", extra="ignore"
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_redis_url: str | None = None
    admin_token: SecretStr | None = None
    queue_name: str = "spritequeue:queue"
    log_level: str = "INFO"

    redis: RedisSettings = RedisSettings()
    pixellab: PixelLabSettings = PixelLabSettings()
    firestore: FirestoreSettings = FirestoreSettings()
    cache: CacheSettings = CacheSettings()
    limits: LimitSettings = LimitSettings()
    jobs: JobSettings = JobSettings()
    worker: WorkerSettings = WorkerSettings()
    sse: SSESettings = SSESettings()
    auth: AuthSettings = AuthSettings()
    server: ServerSettings = ServerSettings()
    webhooks: WebhookSettings = WebhookSettings()

    def __repr_args__(self) -> Any:
        # The Redis URLs stay plain strings (every client takes one), so their passwords are
        # hidden here: a Settings object in a log line or a traceback shows none.
        for name, value in super().__repr_args__():
            if name in {"redis_url", "cache_redis_url"} and isinstance(value, str):
                value = hide_url_password(value)
            yield name, value

    @property
    def effective_cache_redis_url(self) -> str:
        return self.cache_redis_url or self.redis_url


def check_api_settings(settings: Settings) -> None:
    """Raises ConfigurationError for a setting the API must not start with."""
    if settings.admin_token is not None:
        length = len(settings.admin_token.get_secret_value())
        if length < MIN_ADMIN_TOKEN_CHARS:
            raise ConfigurationError(
                f"SPRITEQ_ADMIN_TOKEN is {length} characters; it must be at least "
                f"{MIN_ADMIN_TOKEN_CHARS} (make one with: python3 -c "
                f"'import secrets; print(secrets.token_urlsafe(32))')"
            )
