"""The OpenAPI 3.1 document of the HTTP API, built from the pydantic models the routes use.

Schemas come from ``model_json_schema`` of the same models (``backend.models`` and, for
bodies the routes build as dicts, ``backend.api.schemas``); error responses from the error
tree in ``backend.errors``; limits quoted in descriptions from the settings in force. The
operations are written by hand, one module per route module, since what a route answers is
in its code, not in its signature; a test walks the app's routes and fails when they and
this document disagree, and the contract tests check every answer against it.
"""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from backend.api.openapi import admin, events, groups, jobs, system, upstream
from backend.api.openapi.components import (
    HEADERS,
    JSON,
    PARAMETERS,
    SECURITY_SCHEMES,
    Schemas,
    parameter,
    shared_responses,
    with_request_id,
)
from backend.api.schemas import (
    AdminStats,
    DlqEntry,
    DlqPage,
    DlqRetryFilter,
    DlqRetryResult,
    GroupView,
    InvalidRequestBody,
    JobEvent,
    JobList,
    JobRequestBody,
    Liveness,
    Readiness,
)
from backend.config import Settings
from backend.models import AdminUpstreamView, ErrorBody, JobView, QueueView, UpstreamView

# Request bodies are described as validated, responses as serialized.
MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (JobRequestBody, "validation"),
    (JobEvent, "validation"),  # validation mode: ``data`` is a JSON string on the wire
    (DlqRetryFilter, "validation"),
    *(
        (model, "serialization")
        for model in (
            JobView,
            GroupView,
            JobList,
            QueueView,
            UpstreamView,
            AdminUpstreamView,
            ErrorBody,
            InvalidRequestBody,
            DlqEntry,
            DlqPage,
            DlqRetryResult,
            AdminStats,
            Liveness,
            Readiness,
        )
    ),
]

TAGS = [
    {"name": "jobs", "description": "Submit generation requests and follow them."},
    {"name": "queue", "description": "The public queue state."},
    {"name": "admin", "description": "Dead-letter queue and statistics (admin tokens)."},
    {"name": "health", "description": "Liveness, readiness and metrics."},
    {"name": "pages", "description": "The web pages for artists and admins."},
    {"name": "meta", "description": "This document and its reference page."},
]

DESCRIPTION = """\
Pixel-art sprite generation as a job queue. Submit a request, then poll the job or stream
its progress, and fetch the PNG when it has completed.

* **Auth**: `Authorization: Bearer <token>` on every `/v1` route but `/v1/queue`; a user
  sees only their own jobs (another user's job is a 404). `/v1/admin/*` needs an admin token.
* **Errors** are `{"error": {"code", "message", "details"?}}`; `code` is stable, `message`
  is for people. 429 and 503 carry `Retry-After` (seconds).
* **Tracing**: send `X-Request-ID` to name a request; every response carries one.
"""


def _version() -> str:
    try:
        return version("spritequeue")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def _operations(paths: JSON) -> list[JSON]:
    return [operation for item in paths.values() for operation in item.values()]


def build_document(settings: Settings) -> JSON:
    """The whole document, as a dict ready for ``json.dumps``."""
    schemas = Schemas(MODELS)
    paths: JSON = {
        **jobs.paths(schemas, settings),
        **groups.paths(schemas),
        **events.paths(schemas, settings),
        **system.paths(schemas),
        **admin.paths(schemas, settings),
        **upstream.paths(schemas),
    }
    for operation in _operations(paths):
        operation.setdefault("parameters", []).append(parameter("RequestId"))
        with_request_id(operation["responses"])
    responses = with_request_id(shared_responses(schemas))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "spritequeue",
            "version": _version(),
            "description": DESCRIPTION,
        },
        "tags": TAGS,
        "security": [{"bearerAuth": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": responses,
            "parameters": copy.deepcopy(PARAMETERS),
            "headers": copy.deepcopy(HEADERS),
            "securitySchemes": copy.deepcopy(SECURITY_SCHEMES),
        },
    }


__all__ = ["MODELS", "build_document"]
