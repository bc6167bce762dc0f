"""``/v1/admin/upstream``: PixelLab's state and balance; lift a pause (after fixing the key
or credit). The balance is what a worker last read: the API never calls PixelLab itself."""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.api.auth import admin
from backend.queue.resources import Resources

log = structlog.get_logger(__name__)


async def show(request: Request) -> Response:
    await admin(request)
    resources: Resources = request.app.state.resources
    view = await resources.upstream.admin_view()
    return Response(view.model_dump_json(), media_type="application/json")


async def resume(request: Request) -> Response:
    who = await admin(request)
    resources: Resources = request.app.state.resources
    view = await resources.upstream.resume(by=f"admin:{who.user}")
    return Response(view.model_dump_json(), media_type="application/json")


routes = [
    Route("/v1/admin/upstream", show, methods=["GET"]),
    Route("/v1/admin/upstream/resume", resume, methods=["POST"]),
]
