"""Operations of ``/v1/admin``: the dead-letter queue and the queue statistics."""

from __future__ import annotations

from backend.api.openapi.components import JSON, Schemas, error, links, parameter, response
from backend.api.schemas import AdminStats, DlqEntry, DlqPage, DlqRetryFilter, DlqRetryResult
from backend.config import Settings
from backend.errors import (
    BadRequest,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    Unavailable,
    UnsupportedMediaType,
)
from backend.models import JobView

ENTRY_LINKS = ("getDeadLetter", "retryDeadLetter", "deleteDeadLetter")
NO_ENTRY = "No such dead-letter entry (never dead-lettered, deleted, or expired)."


def _guarded(responses: JSON) -> JSON:
    """Every admin operation answers 401 without a token, 403 with a user's token."""
    return {"401": response("Unauthorized"), "403": response("Forbidden"), **responses}


def _list(schemas: Schemas) -> JSON:
    return {
        "operationId": "listDeadLetters",
        "tags": ["admin"],
        "summary": "Dead-lettered jobs, newest first",
        "parameters": [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "`next_cursor` of the previous page; anything but digits reads "
                "from the start.",
                "schema": {"type": "string"},
            },
        ],
        "responses": _guarded(
            {
                "200": schemas.json(
                    DlqPage,
                    "A page of entries.",
                    links=links("/items/0/job_id", *ENTRY_LINKS),
                ),
                "422": error(
                    "`limit` is not a whole number from 1 to 200.", InvalidRequest, schemas=schemas
                ),
                "503": response("Unavailable"),
            }
        ),
    }


def _get(schemas: Schemas) -> JSON:
    return {
        "operationId": "getDeadLetter",
        "tags": ["admin"],
        "summary": "One dead-letter entry",
        "parameters": [parameter("JobId")],
        "responses": _guarded(
            {
                "200": schemas.json(DlqEntry, "The entry."),
                "404": error(NO_ENTRY, NotFound, schemas=schemas),
                "503": response("Unavailable"),
            }
        ),
    }


def _retry(schemas: Schemas, settings: Settings) -> JSON:
    return {
        "operationId": "retryDeadLetter",
        "tags": ["admin"],
        "summary": "Requeue a dead-lettered job under its id",
        "description": "Bypasses the per-user cap, not the global one.",
        "parameters": [parameter("JobId")],
        "responses": _guarded(
            {
                "202": schemas.json(JobView, "Queued again.", links=links("/job_id", "getJob")),
                "404": error(NO_ENTRY, NotFound, schemas=schemas),
                "503": error(
                    f"The queue is full ({settings.limits.queue_capacity} jobs), or Redis is down.",
                    QueueFull,
                    Unavailable,
                    schemas=schemas,
                ),
            }
        ),
    }


def _retry_bulk(schemas: Schemas, settings: Settings) -> JSON:
    return {
        "operationId": "retryDeadLettersByFilter",
        "tags": ["admin"],
        "summary": "Requeue the dead letters of one error type, or a list of ids",
        "description": "Oldest first, each under its own job id, until the global cap "
        f"({settings.limits.queue_capacity} jobs) is reached; the matches left over stay in the "
        "DLQ and are counted in `remaining`. Bypasses the per-user cap and is not charged to "
        "the users' daily quotas. Unknown ids are skipped.",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.ref(DlqRetryFilter)}},
        },
        "responses": _guarded(
            {
                "202": schemas.json(DlqRetryResult, "What was requeued, and what is left."),
                "400": error("The body is not valid JSON.", BadRequest, schemas=schemas),
                "413": error(
                    f"The body is over {settings.limits.max_body_bytes} bytes.",
                    PayloadTooLarge,
                    schemas=schemas,
                ),
                "415": error(
                    "The body is not `application/json`.", UnsupportedMediaType, schemas=schemas
                ),
                "422": error(
                    "Not exactly one of `error_type` (a known type) and `ids` (1 to 1000).",
                    InvalidRequest,
                    schemas=schemas,
                ),
                "503": response("Unavailable"),
            }
        ),
    }


def _delete(schemas: Schemas) -> JSON:
    return {
        "operationId": "deleteDeadLetter",
        "tags": ["admin"],
        "summary": "Drop a dead-letter entry",
        "parameters": [parameter("JobId")],
        "responses": _guarded(
            {
                "204": {"description": "Dropped."},
                "404": error(NO_ENTRY, NotFound, schemas=schemas),
                "503": response("Unavailable"),
            }
        ),
    }


def _stats(schemas: Schemas) -> JSON:
    return {
        "operationId": "getStats",
        "tags": ["admin"],
        "summary": "Queue, per-user, worker, cache and duration figures",
        "responses": _guarded(
            {
                "200": schemas.json(AdminStats, "The figures."),
                "503": response("Unavailable"),
            }
        ),
    }


def paths(schemas: Schemas, settings: Settings) -> JSON:
    return {
        "/v1/admin/dlq": {"get": _list(schemas)},
        "/v1/admin/dlq/{job_id}": {"get": _get(schemas), "delete": _delete(schemas)},
        "/v1/admin/dlq/retry": {"post": _retry_bulk(schemas, settings)},
        "/v1/admin/dlq/{job_id}/retry": {"post": _retry(schemas, settings)},
        "/v1/admin/stats": {"get": _stats(schemas)},
    }
