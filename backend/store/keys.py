"""Every Redis key and channel name spritequeue uses, in one place.

arq's own keys (``arq:job:*``, ``arq:in-progress:*``, ``arq:retry:*``, ``arq:abort``) are named
by ``arq.constants``; the queue's sorted set is ``Settings.queue_name``.
"""

from __future__ import annotations

PREFIX = "sq:"

INFLIGHT = PREFIX + "inflight"  # zset job_id -> admitted at (ms): queued + running, the global cap
ACTIVE = PREFIX + "active"  # zset job_id -> started at (ms): running now
DLQ = PREFIX + "dlq"  # zset job_id -> dead-lettered at (ms)
DURATIONS = PREFIX + "durations"  # list of recent run durations (s), newest first
WORKERS = PREFIX + "workers"  # zset worker_id -> last heartbeat (ms)
EVENTS_CHANNEL = PREFIX + "events"  # pub/sub: one message per job event, for the SSE fan-out
# pub/sub: work became available; the message says which (backend.queue.wakeups): "job
# <id>" (one admitted job), "job" (several), "requeue" (perhaps deferred), "permit",
# "abort" (a running job cancelled), "webhook"
WAKE_CHANNEL = PREFIX + "wake"
QUEUE_STATE = PREFIX + "queue-state"  # last reported ok|warning|critical
STATS = PREFIX + "stats"  # hash of counters exact across processes (cache hits, misses, …)
POSITIONS_TICK = PREFIX + "positions-tick"  # held for one interval by the process announcing
# Set for one lease by a worker back from a Redis outage: no attempt is taken over meanwhile,
# so runners whose leases lapsed in the outage renew them and keep their (paid) calls.
TAKEOVER_PAUSE = PREFIX + "takeover-pause"
# PixelLab as the deployment sees it (backend.limits.upstream): the call permits, a zset
# attempt token -> lease expiry (ms), and a hash of its state (ok|throttled|paused), the
# reason, since when, and the number of permits while throttled.
PERMITS = PREFIX + "permits"
UPSTREAM = PREFIX + "upstream"
PROBE_TICK = PREFIX + "probe-tick"  # held for one probe interval by the process probing
# PixelLab's balance as last read by a worker: a hash {usd, checked_at}, for the admin page.
BALANCE = PREFIX + "balance"
BALANCE_TICK = PREFIX + "balance-tick"  # held for one balance interval by the process reading
# zset job_id -> when its webhook delivery is due (ms); a claimed one: its lease's end.
WEBHOOKS = PREFIX + "webhooks"


def job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def dlq_entry(job_id: str) -> str:
    return f"{PREFIX}dlq:{job_id}"


def user_inflight(user: str) -> str:
    return f"{PREFIX}user:{user}:inflight"


def user_streams(user: str) -> str:
    """zset of the user's open SSE streams: lease id -> lease expiry (ms)."""
    return f"{PREFIX}user:{user}:streams"


def user_jobs(user: str) -> str:
    return f"{PREFIX}user:{user}:jobs"


def user_submits(user: str) -> str:
    """counter of the user's submissions in the current rate window (``countSubmit``)."""
    return f"{PREFIX}user:{user}:submits"


def user_generations(user: str, day: str) -> str:
    """counter of the user's jobs sent to PixelLab on a UTC ``day`` (YYYYMMDD)."""
    return f"{PREFIX}user:{user}:generations:{day}"


def dedup(user: str, cache_key: str) -> str:
    return f"{PREFIX}dedup:{user}:{cache_key}"


def cache(cache_key: str) -> str:
    return f"{PREFIX}cache:{cache_key}"


def flight(cache_key: str) -> str:
    return f"{PREFIX}flight:{cache_key}"


def flight_outcome(cache_key: str) -> str:
    """How the last single-flight call for this key ended, for the jobs that waited on it."""
    return f"{PREFIX}flight-outcome:{cache_key}"


def token(token_hash: str) -> str:
    return f"{PREFIX}token:{token_hash}"


def worker(worker_id: str) -> str:
    return f"{PREFIX}worker:{worker_id}"


INFLIGHT_USERS = PREFIX + "inflight-users"  # hash job_id -> user, for freeing orphaned slots

# API tokens (backend.store.tokens): the record is sq:token:{sha256}, a hash with fields.
TOKENS = PREFIX + "tokens"  # hash token id -> {"hash", "user"} JSON: the index `token list` reads
TOKENS_LAST_USED = PREFIX + "tokens:last-used"  # hash token sha256 -> last use (s), ≤ 1 write/min


def user_tokens(user: str) -> str:
    """set of the user's token ids."""
    return f"{PREFIX}user:{user}:tokens"


def auth_failures(address: str, minute: int) -> str:
    """counter of failed token look-ups from one client address in one minute."""
    return f"{PREFIX}auth-failures:{address}:{minute}"


def input_image(sha256: str) -> str:
    """An input image's PNG bytes, named by their SHA-256 (``store.inputs``)."""
    return f"{PREFIX}input:{sha256}"


def group(group_id: str) -> str:
    """A submission's variants: JSON {user, jobs, created_at} (``store.submissions``)."""
    return f"{PREFIX}group:{group_id}"
