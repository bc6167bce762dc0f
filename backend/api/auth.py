"""Bearer-token authentication: who is calling, and are they an admin."""

from __future__ import annotations

import structlog
from starlette.requests import Request

from backend.errors import Forbidden, Unauthorized
from backend.store.tokens import Principal, TokenStore


async def principal(request: Request) -> Principal:
    """The caller; raises Unauthorized (401) without a valid ``Authorization: Bearer`` token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    tokens: TokenStore = request.app.state.tokens
    found = await tokens.resolve(token.strip())
    if found is None:
        raise Unauthorized("invalid token")
    structlog.contextvars.bind_contextvars(user_id=found.user)
    return found


async def admin(request: Request) -> Principal:
    """An admin caller; raises Unauthorized (401) or Forbidden (403)."""
    found = await principal(request)
    if not found.admin:
        raise Forbidden("admin token required")
    return found
