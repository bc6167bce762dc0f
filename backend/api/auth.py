"""Bearer-token authentication: who is calling, and are they an admin.

Every failed look-up is counted (``spritequeue_auth_failures_total``) and, past an
allowance per client address per minute, slowed and answered ``429``
(``backend.store.auth_failures``). A valid token costs one Redis round trip, nothing more:
a route about one job reads the job in that same round trip (``principal_and_read``), and
a plain submission counts its rate, reads its dedup window and, for a sprite already in L1,
writes its answered job in it (``principal_screened``).
The token is read from Redis on every request, so a revoked one is refused at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from starlette.requests import Request

from backend.errors import Forbidden, TooManyAuthFailures, Unauthorized
from backend.metrics import AUTH_FAILURES
from backend.store.auth_failures import AuthFailures
from backend.store.quotas import Screened, SubmitRate
from backend.store.tokens import Principal, TokenStore
from backend.store.writes import HitWrite

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def principal(request: Request) -> Principal:
    """The caller; raises Unauthorized (401) without a valid ``Authorization: Bearer`` token,
    or TooManyAuthFailures (429) when its address has failed too often this minute."""
    found, _ = await principal_and_read(request, None)
    return found


async def principal_and_read(
    request: Request, hash_key: str | None
) -> tuple[Principal, dict[bytes, bytes]]:
    """``principal``, and the fields of the hash ``hash_key`` from the same round trip."""
    return await _authenticated(
        request, lambda tokens, token: tokens.resolve_and_read(token, hash_key)
    )


async def principal_screened(
    request: Request, rate: SubmitRate, dedup_key: str, hit: HitWrite | None = None
) -> tuple[Principal, Screened]:
    """``principal``, with the caller's submit rate counted and the dedup window read in
    the same round trip (``TokenStore.resolve_for_submit``), and ``hit``'s job written
    in it when it may be: a plain submission's caller look-up."""
    found, screened = await _authenticated(
        request, lambda tokens, token: tokens.resolve_for_submit(token, rate, dedup_key, hit)
    )
    assert screened is not None  # a known caller is always screened
    return found, screened


def has_bearer(request: Request) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


async def _authenticated(
    request: Request, lookup: Callable[[TokenStore, str], Awaitable[tuple[Principal | None, T]]]
) -> tuple[Principal, T]:
    """The caller found by ``lookup``, with what else it read; raises Unauthorized (401)
    or TooManyAuthFailures (429) as ``principal`` does."""
    if not has_bearer(request):
        AUTH_FAILURES.labels(reason="missing").inc()
        raise Unauthorized("missing bearer token")
    token = request.headers["authorization"].partition(" ")[2].strip()
    found, read = await lookup(request.app.state.tokens, token)
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
