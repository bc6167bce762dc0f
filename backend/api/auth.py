"""Bearer-token authentication: who is calling, and are they an admin.

Every failed look-up is counted (``spritequeue_auth_failures_total``) and, past an
allowance per client address per minute, slowed and answered ``429``
(``backend.store.auth_failures``). A valid token costs one Redis round trip, nothing more,
and a route about one job reads the job in that same round trip (``principal_and_read``).
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.requests import Request

from backend.errors import Forbidden, TooManyAuthFailures, Unauthorized
from backend.metrics import AUTH_FAILURES
from backend.store.auth_failures import AuthFailures
from backend.store.tokens import Principal, TokenStore

log = structlog.get_logger(__name__)


async def principal(request: Request) -> Principal:
    """The caller; raises Unauthorized (401) without a valid ``Authorization: Bearer`` token,
    or TooManyAuthFailures (429) when its address has failed too often this minute."""
    found, _ = await principal_and_read(request, None)
    return found


async def principal_and_read(
    request: Request, hash_key: str | None
) -> tuple[Principal, dict[bytes, bytes]]:
    """``principal``, and the fields of the hash ``hash_key`` from the same round trip."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        AUTH_FAILURES.labels(reason="missing").inc()
        raise Unauthorized("missing bearer token")
    tokens: TokenStore = request.app.state.tokens
    found, read = await tokens.resolve_and_read(token.strip(), hash_key)
    if found is None:
        await _failed(request)
        raise Unauthorized("invalid token")
    structlog.contextvars.bind_contextvars(user_id=found.user)
    return found, read


async def _failed(request: Request) -> None:
    failures: AuthFailures = request.app.state.auth_failures
    address = request.client.host if request.client else "unknown"
    verdict = await failures.record(address)
    if not verdict.throttled:
        AUTH_FAILURES.labels(reason="invalid").inc()
        return
    AUTH_FAILURES.labels(reason="throttled").inc()
    if verdict.failures == failures.allowance + 1:
        log.warning("auth_failures_throttled", client=address, failures=verdict.failures)
    await asyncio.sleep(verdict.delay_s)
    raise TooManyAuthFailures(
        "too many failed token look-ups from this address; try again later",
        retry_after_s=verdict.retry_after_s,
    )


async def admin(request: Request) -> Principal:
    """An admin caller; raises Unauthorized (401), TooManyAuthFailures (429) or Forbidden (403)."""
    found = await principal(request)
    if not found.admin:
        raise Forbidden("admin token required")
    return found
