"""Public queue state, health checks and Prometheus metrics.

``/health/ready`` answers 503 unless Redis answers and at least one worker's heartbeat is
fresh: without either, accepted jobs would not run. The queue state and the cache layers are
reported but never fail it: a full queue still serves (reads, polling, 503 ``queue_full``
with Retry-After), and a failing cache layer is a miss, not an outage (docs/design.md), so pulling
every replica out of rotation for either would turn a degradation into an outage. Each check
is bounded by ``READY_TIMEOUT_S`` and they run concurrently, so a dead Redis answers in ~1 s.

Anonymous callers (load balancers, probes) get only ``ok``/``degraded``/``down`` per
dependency: backend error text (addresses, ports, driver messages) is for admins, who get
every figure with an admin bearer token.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend.api.auth import admin
from backend.errors import SpriteQueueError
from backend.limits.estimates import HEARTBEAT_STALE_S
from backend.models import QueueState
from backend.observability import metrics_text
from backend.queue.resources import Resources
from backend.store import keys

READY_TIMEOUT_S = 1.0


async def queue(request: Request) -> Response:
    resources: Resources = request.app.state.resources
    view = await resources.estimates.queue_view()
    view.upstream = await resources.upstream.view()
    return Response(view.model_dump_json(), media_type="application/json")


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _check_redis(resources: Resources) -> dict[str, Any]:
    began = time.perf_counter()
    await resources.redis.ping()
    return {"status": "ok", "latency_ms": round((time.perf_counter() - began) * 1000, 2)}


async def _check_workers(resources: Resources) -> dict[str, Any]:
    cutoff = int((time.time() - HEARTBEAT_STALE_S) * 1000)
    alive = await resources.redis.zcount(keys.WORKERS, cutoff, "+inf")
    return {
        "status": "ok" if alive else "down",
        "alive": int(alive),
        "stale_after_s": HEARTBEAT_STALE_S,
    }


async def _check_queue(resources: Resources) -> dict[str, Any]:
    view = await resources.estimates.queue_view()
    # A full queue still serves: it is reported, not a reason to pull the API from rotation.
    return {
        "status": "ok",
        "state": view.state.value,
        "critical": view.state is QueueState.CRITICAL,
    }


async def _check_cache(resources: Resources) -> dict[str, Any]:
    layers = await resources.cache.ping()
    status = "ok" if all(result == "ok" for result in layers.values()) else "degraded"
    return {"status": status, "layers": layers, "l2_enabled": resources.cache.l2_enabled}


async def _timed(name: str, check: Any) -> tuple[str, dict[str, Any]]:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            return name, await check
    except Exception as exc:
        return name, {"status": "down", "error": type(exc).__name__}


async def _admin_caller(request: Request) -> bool:
    """Whether the request carries a working admin token; never raises (a failed look-up is
    still counted against its address, as on every route)."""
    if "authorization" not in request.headers:
        return False
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await admin(request)
    except (SpriteQueueError, RedisError, OSError, TimeoutError):
        return False
    return True


async def ready(request: Request) -> Response:
    resources: Resources = request.app.state.resources
    results = dict(
        await asyncio.gather(
            _timed("redis", _check_redis(resources)),
            _timed("workers", _check_workers(resources)),
            _timed("queue", _check_queue(resources)),
            _timed("cache", _check_cache(resources)),
        )
    )
    ok = all(results[name]["status"] == "ok" for name in ("redis", "workers"))
    degraded = any(check["status"] != "ok" for check in results.values())
    status = "unavailable" if not ok else "degraded" if degraded else "ok"
    if not await _admin_caller(request):
        results = {name: {"status": check["status"]} for name, check in results.items()}
    return JSONResponse({"status": status, "checks": results}, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    # In a thread: the scrape-time collector reads Redis with a synchronous client.
    own: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    body = await run_in_threadpool(metrics_text, *([own] if own is not None else []))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/v1/queue", queue, methods=["GET"]),
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
