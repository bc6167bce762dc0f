"""One exception-handler map: every error becomes the error body of docs/api.md.

Redis failures are translated here, at the HTTP edge, into a fast ``503 unavailable``.
"""

from __future__ import annotations

from typing import Any

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from backend.errors import SpriteQueueError, Unavailable

log = structlog.get_logger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(error: SpriteQueueError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


async def _ours(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SpriteQueueError)
    return error_response(exc)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = {
        "error": {"code": _HTTP_CODES.get(exc.status_code, "http_error"), "message": exc.detail}
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _refusal(exc: ResponseError) -> bool:
    """Redis is there but refuses work (memory, permissions, failover): a dependency outage."""
    if isinstance(exc, OutOfMemoryError | NoPermissionError | ReadOnlyError):
        return True
    return str(exc).startswith(("BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "LOADING"))


async def _redis(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ResponseError) and not _refusal(exc):
        return await _internal(request, exc)  # Redis answered: our command was wrong
    kind = "timeout" if isinstance(exc, RedisTimeoutError) else type(exc).__name__
    log.warning("redis_unavailable", error=kind)
    return error_response(Unavailable("the queue's Redis is unavailable; try again shortly"))


async def _internal(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ClientDisconnect):  # the client went away mid-body: nothing to answer
        log.info("client_disconnected")
        return Response(status_code=499)
    log.exception("request_failed")
    body = {"error": {"code": "internal", "message": "internal error"}}
    return JSONResponse(body, status_code=500)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    SpriteQueueError: _ours,
    HTTPException: _http,
    RedisConnectionError: _redis,
    RedisTimeoutError: _redis,
    RedisError: _redis,
    Exception: _internal,
}
