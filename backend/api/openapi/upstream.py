"""Operations of ``/v1/admin/upstream``: PixelLab's state and balance; lift a pause."""

from __future__ import annotations

from backend.api.openapi.components import JSON, Schemas, response
from backend.models import AdminUpstreamView, UpstreamView


def _show(schemas: Schemas) -> JSON:
    return {
        "operationId": "getUpstream",
        "tags": ["admin"],
        "summary": "PixelLab's state and the account's balance",
        "description": (
            "The `upstream` of `GET /v1/queue`, plus `balance`: the credit a worker last read "
            "from PixelLab's `GET /balance` (one worker across the deployment, every "
            "`SPRITEQ_PIXELLAB__BALANCE_INTERVAL_S`), with when. `null` until a worker has "
            "read it."
        ),
        "responses": {
            "200": schemas.json(AdminUpstreamView, "PixelLab's state and balance."),
            "401": response("Unauthorized"),
            "403": response("Forbidden"),
            "503": response("Unavailable"),
        },
    }


def _resume(schemas: Schemas) -> JSON:
    return {
        "operationId": "resumeUpstream",
        "tags": ["admin"],
        "summary": "Resume PixelLab calls after a pause (401 or 402)",
        "description": (
            "A 401 or 402 from PixelLab pauses every call; queued jobs wait. A probe of "
            "`GET /balance` resumes by itself once the key works and there is credit; this "
            "resumes at once (after fixing the key or buying credit)."
        ),
        "responses": {
            "200": schemas.json(UpstreamView, "PixelLab's state now (`ok`)."),
            "401": response("Unauthorized"),
            "403": response("Forbidden"),
            "503": response("Unavailable"),
        },
    }


def paths(schemas: Schemas) -> JSON:
    return {
        "/v1/admin/upstream": {"get": _show(schemas)},
        "/v1/admin/upstream/resume": {"post": _resume(schemas)},
    }
