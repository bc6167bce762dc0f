"""``/v1/admin``: the dead-letter queue and queue statistics. Admin tokens only."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend.api.auth import admin
from backend.api.body import read_json, validate
from backend.api.params import int_param
from backend.api.schemas import DlqRetryFilter, DlqRetryResult
from backend.observability import admin_stats
from backend.queue.dlq import DeadLetters
from backend.queue.resources import Resources


def _dlq(request: Request) -> DeadLetters:
    dlq: DeadLetters = request.app.state.dlq
    return dlq


async def dlq_list(request: Request) -> Response:
    await admin(request)
    limit = int_param(request, "limit", default=50, low=1, high=200)
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not (cursor.isascii() and cursor.isdigit()):
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


async def dlq_retry_bulk(request: Request) -> Response:
    """Requeue by filter (``{"error_type": …}`` or ``{"ids": […]}``), up to free capacity."""
    await admin(request)
    resources: Resources = request.app.state.resources
    data = await read_json(request, max_bytes=resources.settings.limits.max_body_bytes)
    wanted = validate(DlqRetryFilter, data)
    error_type = None if wanted.error_type is None else wanted.error_type.value
    done = await _dlq(request).retry_matching(error_type=error_type, ids=wanted.ids)
    body = DlqRetryResult(requeued=done.requeued, remaining=done.remaining, job_ids=done.job_ids)
    return Response(body.model_dump_json(), status_code=202, media_type="application/json")


async def dlq_delete(request: Request) -> Response:
    await admin(request)
    await _dlq(request).delete(request.path_params["job_id"])
    return Response(status_code=204)


async def stats(request: Request) -> Response:
    await admin(request)
    resources: Resources = request.app.state.resources
    body = await admin_stats(resources.redis, resources.estimates, resources.settings)
    return JSONResponse(body)


routes = [
    Route("/v1/admin/dlq", dlq_list, methods=["GET"]),
    Route("/v1/admin/dlq/retry", dlq_retry_bulk, methods=["POST"]),
    Route("/v1/admin/dlq/{job_id}", dlq_get, methods=["GET"]),
    Route("/v1/admin/dlq/{job_id}/retry", dlq_retry, methods=["POST"]),
    Route("/v1/admin/dlq/{job_id}", dlq_delete, methods=["DELETE"]),
    Route("/v1/admin/stats", stats, methods=["GET"]),
]
