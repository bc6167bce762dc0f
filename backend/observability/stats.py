"""``GET /v1/admin/stats``: figures read from Redis, so exact whichever replica answers.

Queue and DLQ sizes, per-user inflight slots, the live workers' heartbeats, the cache hit
rate from the ``keys.STATS`` counters (incremented by every process, unlike Prometheus
counters, which are per process), and p50/p95 over the recent run durations that
``finishJob`` keeps (the last 200 completed runs).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis

from backend.config import Settings
from backend.limits.estimates import HEARTBEAT_STALE_S, QueueEstimates
from backend.store import keys

DURATION_SAMPLES = 200


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of an ascending list; None when empty."""
    if not ordered:
        return None
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _heartbeat(worker_id: str, fields: dict[bytes, bytes], now: float) -> dict[str, Any]:
    beat = {_text(k): _text(v) for k, v in fields.items()}
    out: dict[str, Any] = {"worker_id": worker_id, **beat}
    for name in ("concurrency", "running", "pid"):
        if beat.get(name, "").isdigit():
            out[name] = int(beat[name])
    if beat.get("beat_at"):
        out["beat_at"] = float(beat["beat_at"])
        out["age_s"] = round(max(now - out["beat_at"], 0.0), 3)
    return out


async def admin_stats(
    client: aioredis.Redis, estimates: QueueEstimates, settings: Settings
) -> dict[str, Any]:
    """The stats body; raises redis errors (the API answers those as 503)."""
    now = time.time()
    view = await estimates.queue_view()
    inflight = view.waiting + view.active
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.INFLIGHT_USERS)
        pipe.lrange(keys.DURATIONS, 0, DURATION_SAMPLES - 1)
        pipe.zrangebyscore(keys.WORKERS, int((now - HEARTBEAT_STALE_S) * 1000), "+inf")
        pipe.zcount(keys.DLQ, int((now - settings.jobs.dlq_retention_s) * 1000), "+inf")
        pipe.hmget(keys.STATS, ["cache_hits", "cache_misses"])
        owners, durations, workers, dlq_size, (hits, misses) = await pipe.execute()
    worker_ids = [_text(w) for w in workers]
    async with client.pipeline(transaction=False) as pipe:
        for worker_id in worker_ids:
            pipe.hgetall(keys.worker(worker_id))
        beats = await pipe.execute() if worker_ids else []
    hits, misses = int(hits or 0), int(misses or 0)
    runs = sorted(float(d) for d in durations)
    return {
        "queue": {
            **view.model_dump(mode="json"),
            "inflight": inflight,
            "warning_at": settings.limits.warning_at,
        },
        "per_user_inflight": dict(Counter(_text(user) for user in owners.values())),
        "workers_alive": len(worker_ids),
        "workers": [_heartbeat(w, beat, now) for w, beat in zip(worker_ids, beats, strict=True)],
        "dlq_size": int(dlq_size),
        "cache": {
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        },
        "durations_s": {
            "samples": len(runs),
            "p50": percentile(runs, 0.50),
            "p95": percentile(runs, 0.95),
        },
    }
