"""``/v1/admin``: the dead-letter queue and queue statistics. Admin tokens only."""

from __future__ import annotations

import statistics
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend.api.auth import admin
from backend.api.params import int_param
from backend.queue.dlq import DeadLetters
from backend.queue.resources import Resources
from backend.store import keys


def _dlq(request: Request) -> DeadLetters:
    dlq: DeadLetters = request.app.state.dlq
    return dlq


async def dlq_list(request: Request) -> Response:
    await admin(request)
    limit = int_param(request, "limit", default=50, low=1, high=200)
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not cursor.isdigit():
        cursor = None
    items, next_cursor = await _dlq(request).list(limit=limit, cursor=cursor)
    return JSONResponse({"items": items, "next_cursor": next_cursor})


async def dlq_get(request: Request) -> Response:
    await admin(request)
    return JSONResponse(await _dlq(request).get(request.path_params["job_id"]))


async def dlq_retry(request: Request) -> Response:
    await admin(request)
    submission = await _dlq(request).retry(request.path_params["job_id"])
    return Response(submission.view.model_dump_json(), status_code=202,
                    media_type="application/json")  # fmt: skip


async def dlq_delete(request: Request) -> Response:
    await admin(request)
    await _dlq(request).delete(request.path_params["job_id"])
    return Response(status_code=204)


async def stats(request: Request) -> Response:
    await admin(request)
    resources: Resources = request.app.state.resources
    redis = resources.redis
    queue = await resources.estimates.queue_view()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.INFLIGHT_USERS)
        pipe.lrange(keys.DURATIONS, 0, 199)
        pipe.zrangebyscore(keys.WORKERS, int((time.time() - 60) * 1000), "+inf")
        pipe.zcard(keys.DLQ)
        owners, durations, workers, dlq_size = await pipe.execute()
    per_user: dict[str, int] = {}
    for user in owners.values():
        per_user[user.decode()] = per_user.get(user.decode(), 0) + 1
    heartbeats: list[dict[str, Any]] = []
    for worker_id in workers:
        beat = await redis.hgetall(keys.worker(worker_id.decode()))  # type: ignore[misc]
        heartbeats.append({"worker_id": worker_id.decode(),
                           **{k.decode(): v.decode() for k, v in beat.items()}})  # fmt: skip
    runs = sorted(float(d) for d in durations)
    body = {
        "queue": queue.model_dump(mode="json"),
        "per_user_inflight": per_user,
        "workers": heartbeats,
        "dlq_size": int(dlq_size),
        "durations_s": {
            "samples": len(runs),
            "p50": statistics.median(runs) if runs else None,
            "p95": runs[min(len(runs) - 1, int(len(runs) * 0.95))] if runs else None,
        },
    }
    return JSONResponse(body)


routes = [
    Route("/v1/admin/dlq", dlq_list, methods=["GET"]),
    Route("/v1/admin/dlq/{job_id}", dlq_get, methods=["GET"]),
    Route("/v1/admin/dlq/{job_id}/retry", dlq_retry, methods=["POST"]),
    Route("/v1/admin/dlq/{job_id}", dlq_delete, methods=["DELETE"]),
    Route("/v1/admin/stats", stats, methods=["GET"]),
]
