"""``/v1/admin/upstream``: lift a pause on PixelLab calls (after fixing the key or credit)."""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.api.auth import admin
from backend.queue.resources import Resources

log = structlog.get_logger(__name__)


async def resume(request: Request) -> Response:
    who = await admin(request)
    resources: Resources = request.app.state.resources
    view = await resources.upstream.resume(by=f"admin:{who.user}")
    return Response(view.model_dump_json(), media_type="application/json")


routes = [Route("/v1/admin/upstream/resume", resume, methods=["POST"])]
