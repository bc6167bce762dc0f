"""Operations of ``/v1/groups``: a submission's variants together."""

from __future__ import annotations

from backend.api.openapi.components import JSON, Schemas, error, response
from backend.api.schemas import GroupView
from backend.errors import NotFound


def _get(schemas: Schemas) -> JSON:
    return {
        "operationId": "getGroup",
        "tags": ["jobs"],
        "summary": "The jobs of one submission with variants",
        "description": (
            "The group made by a submission with `variants` > 1, its jobs in seed order, each "
            "as `GET /v1/jobs/{job_id}` shows it."
        ),
        "parameters": [
            {"name": "group_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": schemas.json(GroupView, "The group's jobs."),
            "401": response("Unauthorized"),
            "404": error(
                "No such group, or another user's group (the two look the same).",
                NotFound,
                schemas=schemas,
            ),
        },
    }


def paths(schemas: Schemas) -> JSON:
    return {"/v1/groups/{group_id}": {"get": _get(schemas)}}
