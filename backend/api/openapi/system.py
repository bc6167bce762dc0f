"""Public operations: queue state, health, metrics, the web pages, this document and its viewer."""

from __future__ import annotations

from backend.api.openapi.components import JSON, Schemas, response
from backend.api.schemas import Liveness, Readiness
from backend.models import QueueView

PUBLIC: list[JSON] = []  # ``security: []``: no token needed


def _text(media_type: str, description: str) -> JSON:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def paths(schemas: Schemas) -> JSON:
    return {
        "/v1/queue": {
            "get": {
                "operationId": "getQueue",
                "tags": ["queue"],
                "summary": "Public queue state",
                "description": "`state` is `warning` from the warning threshold on and `critical` "
                "at capacity, when submissions answer 503 `queue_full`.",
                "security": PUBLIC,
                "responses": {
                    "200": schemas.json(QueueView, "The queue's state."),
                    "503": response("Unavailable"),
                },
            }
        },
        "/health/live": {
            "get": {
                "operationId": "getLiveness",
                "tags": ["health"],
                "summary": "The process is up",
                "security": PUBLIC,
                "responses": {"200": schemas.json(Liveness, "Up.")},
            }
        },
        "/health/ready": {
            "get": {
                "operationId": "getReadiness",
                "tags": ["health"],
                "summary": "Ready to serve: Redis answers and a worker is alive",
                "description": "The queue and the cache layers are reported but never fail it: "
                "a full queue still serves, and a cache failure is a miss, not an outage. "
                "Anonymous callers get only each check's `status` (`ok`, `degraded`, `down`); "
                "with an admin bearer token every check carries its figures and errors.",
                "security": PUBLIC,
                "responses": {
                    "200": schemas.json(
                        Readiness,
                        "Ready (`ok`, or `degraded` with a failing "
                        "check that does not stop it serving).",
                    ),
                    "503": schemas.json(Readiness, "Not ready: Redis or every worker is down."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "tags": ["health"],
                "summary": "Prometheus metrics (text exposition format)",
                "security": PUBLIC,
                "responses": {"200": _text("text/plain", "The metrics, prefix `spritequeue_`.")},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApiDocument",
                "tags": ["meta"],
                "summary": "This document (OpenAPI 3.1)",
                "security": PUBLIC,
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "operationId": "getArtistPage",
                "tags": ["pages"],
                "summary": "The web page for artists: submit, follow and download sprites",
                "security": PUBLIC,
                "responses": {"200": _text("text/html", "The page.")},
            }
        },
        "/admin": {
            "get": {
                "operationId": "getAdminPage",
                "tags": ["pages"],
                "summary": "The web page for admins (what it shows needs an admin token)",
                "security": PUBLIC,
                "responses": {"200": _text("text/html", "The page.")},
            }
        },
        "/docs": {
            "get": {
                "operationId": "getApiReference",
                "tags": ["meta"],
                "summary": "This document as a readable page (Swagger UI, served locally)",
                "security": PUBLIC,
                "responses": {"200": _text("text/html", "The reference page.")},
            }
        },
    }
