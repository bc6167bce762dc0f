"""Operations of ``/v1/admin/upstream``: lift a pause on PixelLab calls."""

from __future__ import annotations

from backend.api.openapi.components import JSON, Schemas, response
from backend.models import UpstreamView


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
    return {"/v1/admin/upstream/resume": {"post": _resume(schemas)}}
