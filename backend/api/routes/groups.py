"""``/v1/groups/{group_id}``: a submission's variants together; and the checks of a submit
body's queue options (``backend.options``): who may ask for ``high``, which callbacks are
safe."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend.api.auth import principal
from backend.config import Settings
from backend.errors import Forbidden, InvalidRequest, NotFound
from backend.models import GenerationRequest, JobView
from backend.options import Priority
from backend.queue.resources import Resources
from backend.store.tokens import Principal
from backend.webhooks.urls import check_callback


async def check_options(who: Principal, request: GenerationRequest, settings: Settings) -> None:
    """Raises Forbidden (403) for ``priority: high`` without the right to it, and
    InvalidRequest (422) for a ``callback_url`` that may not be called (``webhooks.urls``)
    or when webhooks are not configured."""
    if request.priority is Priority.HIGH and not who.may_submit_high:
        raise Forbidden(
            "priority high needs a token created with --priority high (or an admin token)"
        )
    if request.callback_url is None:
        return
    if settings.webhooks.secret is None:
        reason = "webhooks are not configured on this server (SPRITEQ_WEBHOOKS__SECRET)"
        raise InvalidRequest(
            f"callback_url: {reason}", details=[{"field": "callback_url", "reason": reason}]
        )
    await check_callback(request.callback_url, settings.webhooks.http_hosts())


def group_body(group_id: str, views: list[JobView]) -> dict[str, Any]:
    return {"group_id": group_id, "jobs": [view.model_dump(mode="json") for view in views]}


async def get_group(request: Request) -> Response:
    """The group's jobs in seed order; another user's group (or an expired one) is a 404."""
    who = await principal(request)
    resources: Resources = request.app.state.resources
    group = await resources.submissions.group(request.path_params["group_id"])
    if group is None or (group.user != who.user and not who.admin):
        raise NotFound("group not found")
    views = []
    for job_id in group.job_ids:
        record = await resources.jobs.get(job_id)
        if record is not None:
            views.append(record.view())
    return JSONResponse(group_body(group.group_id, views))


routes = [Route("/v1/groups/{group_id}", get_group, methods=["GET"])]
