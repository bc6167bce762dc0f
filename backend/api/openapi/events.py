"""The ``GET /v1/jobs/{job_id}/events`` operation: Server-Sent Events, described for readers."""

from __future__ import annotations

from backend.api.openapi.components import JSON, Schemas, error, parameter, response
from backend.api.schemas import JobEvent
from backend.config import Settings
from backend.errors import InvalidRequest, NotFound, TooManyStreams
from backend.models import JobView

# Open API 3.1 has no way to type the events of a text/event-stream body. Its successor
# (3.2) gives each event a schema (``itemSchema``) with ``data`` a string whose
# ``contentSchema`` is the payload; tools that know SSE (schemathesis among them) read the
# 3.1 ``schema`` the same way, so that is what it holds: ``JobEvent``. ``x-sse-events`` adds
# what a schema cannot say: which events end the stream.
_EVENTS = {
    "progress": "The job moved on (queued → started → submitted → received) or, while it "
    "waits, its `position` or `estimated_wait_s` changed.",
    "completed": "Final: the sprite is ready at `data.result.url`.",
    "failed": "Final: the job failed for good; `data.error` says why.",
    "cancelled": "Final: the job was cancelled.",
}

_EXAMPLE = (
    "retry: 2000\n\n"
    "id: 1700000000000-0\nevent: progress\n"
    'data: {"job_id":"5f0c…","status":"active","progress":5,"stage":"started",…}\n\n'
    ": ping\n\n"
    "id: 1700000004211-0\nevent: completed\n"
    'data: {"job_id":"5f0c…","status":"completed","progress":100,"stage":"completed",…}\n\n'
)

# At most 19 digits a part, so a schema-valid id is never out of range (parts are < 2**64);
# empty means "from the start".
_RESUME = r"^(\d{1,19}(-\d{1,19})?)?$"


def _description(settings: Settings) -> str:
    return (
        "A job's progress as Server-Sent Events. Every event has an `id:`; a client that "
        "reconnects with `Last-Event-ID` (what `EventSource` does by itself) or "
        "`?last_event_id=` gets only what came after it. A finished job's stream replays its "
        "events and closes after the final one (`completed`, `failed` or `cancelled`); a "
        f"comment `: ping` is sent every {settings.sse.ping_s:g} s while nothing happens. "
        "The first frame is `retry: 2000`, the reconnect delay in milliseconds.\n\n"
        "The browser's `EventSource` cannot send an `Authorization` header: from a browser, "
        "read the stream with `fetch` (or a fetch-based SSE client) and the bearer token.\n\n"
        f"Each user may hold {settings.limits.max_sse_per_user} streams open at once."
    )


def _operation(schemas: Schemas, settings: Settings) -> JSON:
    events = [
        {
            "event": name,
            "final": name != "progress",
            "description": text,
            "data": schemas.ref(JobView),
        }
        for name, text in _EVENTS.items()
    ]
    return {
        "operationId": "streamJobEvents",
        "tags": ["jobs"],
        "summary": "Stream a job's progress (Server-Sent Events)",
        "description": _description(settings),
        "parameters": [
            parameter("JobId"),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "Resume after this event id (sent by `EventSource` on reconnect).",
                "schema": {"type": "string", "pattern": _RESUME},
            },
            {
                "name": "last_event_id",
                "in": "query",
                "required": False,
                "description": "The same as `Last-Event-ID`, for clients that cannot set headers; "
                "the header wins when both are given.",
                "schema": {"type": "string", "pattern": _RESUME},
            },
        ],
        "responses": {
            "200": {
                "description": "The event stream. Each event is an `id:`, an `event:` "
                "(`x-sse-events` lists them) and a `data:` line holding the job as JSON; the "
                "schema describes one event, as Open API 3.2's `itemSchema` will.",
                "content": {
                    "text/event-stream": {
                        "schema": schemas.ref(JobEvent),
                        "example": _EXAMPLE,
                        "x-sse-events": events,
                    }
                },
            },
            "204": {
                "description": "The `Last-Event-ID` is at or after the final event: "
                "nothing more will come, and `EventSource` stops reconnecting."
            },
            "401": response("Unauthorized"),
            "404": error("No such job, or another user's job.", NotFound, schemas=schemas),
            "422": error(
                "`Last-Event-ID` / `last_event_id` is not an event id of this stream.",
                InvalidRequest,
                schemas=schemas,
            ),
            "429": error(
                "You have too many streams open; close one or retry later.",
                TooManyStreams,
                schemas=schemas,
            ),
            "503": response("Unavailable"),
        },
    }


def paths(schemas: Schemas, settings: Settings) -> JSON:
    return {"/v1/jobs/{job_id}/events": {"get": _operation(schemas, settings)}}
