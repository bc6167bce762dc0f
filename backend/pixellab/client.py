"""An async httpx client for PixelLab that speaks only in our own errors.

Every failure leaves this module as an ``UpstreamError`` whose ``ErrorType`` comes from
``backend.retry``: non-2xx statuses, transport failures, timeouts and bodies we cannot read
alike, always chained with ``raise ... from exc``. The httpx client is injected; it is built
by ``create_http_client`` and owned (opened and closed) by whoever runs the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from backend.config import PixelLabSettings
from backend.errors import ErrorType, UpstreamError
from backend.metrics import PIXELLAB_DURATION, PIXELLAB_REQUESTS
from backend.pixellab.schemas import (
    BalanceResponse,
    GeneratedFrames,
    GeneratedImage,
    GenerateImageResponse,
    GenerateImagesResponse,
)
from backend.retry import classify_exception, classify_status, parse_retry_after

PIXFLUX_PATH = "/generate-image-pixflux"
BALANCE_PATH = "/balance"
_USER_AGENT = "spritequeue/0.1 (+httpx)"
# Balance and other bookkeeping calls; generations pass their own (much longer) timeout.
_DEFAULT_TIMEOUT_S = 30.0
_MAX_MESSAGE_CHARS = 500

_M = TypeVar("_M", bound=BaseModel)


class _BearerAuth(httpx.Auth):
    """Adds the token per request, so it never sits in the client's default headers."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(token='**********')"


KEEPALIVE_CONNECTIONS = 20


def create_http_client(
    settings: PixelLabSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for PixelLab: base URL, pool size, timeouts, bearer auth.

    ``transport`` is for tests (``httpx.MockTransport``). The caller closes the client.
    """
    key = settings.api_key
    return httpx.AsyncClient(
        base_url=settings.base_url,
        auth=_BearerAuth(key) if key is not None and key.get_secret_value() else None,
        headers={"Accept": "application/json", "User-Agent": _USER_AGENT},
        limits=httpx.Limits(
            max_connections=settings.max_connections,
            # Bounded apart from max_connections: httpcore's pool bookkeeping grows with the
            # idle connections it keeps, and 500 of them cost half a worker's CPU
            # (docs/benchmarks.md). Busy bursts still open up to max_connections.
            max_keepalive_connections=min(settings.max_connections, KEEPALIVE_CONNECTIONS),
        ),
        timeout=httpx.Timeout(_DEFAULT_TIMEOUT_S, connect=settings.connect_timeout_s),
        transport=transport,
    )


class PixelLabClient:
    """PixelLab's v1 endpoints that spritequeue uses."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    def __repr__(self) -> str:
        return f"PixelLabClient(base_url='{self._http.base_url}')"

    async def generate_pixflux(self, fields: dict[str, Any], *, timeout_s: float) -> GeneratedImage:
        """Generate one image; ``fields`` is ``canonical_fields(request)``.

        ``timeout_s`` bounds the whole call. Raises ``UpstreamError`` on any failure.
        """
        frames = await self.generate(PIXFLUX_PATH, fields, timeout_s=timeout_s)
        return GeneratedImage(
            png=frames.frames[0], width=frames.width, height=frames.height,
            usage_usd=frames.usage_usd, usage_generations=frames.usage_generations,
        )  # fmt: skip

    async def generate(
        self,
        path: str,
        body: dict[str, Any],
        *,
        timeout_s: float,
        animation: bool = False,
        answering: asyncio.Event | None = None,
    ) -> GeneratedFrames:
        """POST ``body`` to a generation ``path``; the frames of its answer (``images`` for
        an ``animation``, else one ``image``). ``answering`` is set once PixelLab's answer
        has begun (its status line and headers are in). Raises ``UpstreamError`` on any
        failure."""
        started = time.perf_counter()
        outcome = ErrorType.INTERNAL.value
        try:
            response = await self._send(
                "POST", path, json=body, timeout_s=timeout_s, answering=answering
            )
            parsed: GenerateImageResponse | GenerateImagesResponse = (
                _parse(response, GenerateImagesResponse)
                if animation
                else _parse(response, GenerateImageResponse)
            )
            try:
                frames = GeneratedFrames.from_response(parsed)
            except ValueError as exc:
                raise _malformed(response, str(exc)) from exc
            outcome = "ok"
            return frames
        except BaseException as exc:
            outcome = classify_exception(exc).value
            raise
        finally:
            PIXELLAB_REQUESTS.labels(outcome=outcome).inc()
            PIXELLAB_DURATION.observe(time.perf_counter() - started)

    async def balance_usd(self, *, timeout_s: float = _DEFAULT_TIMEOUT_S) -> float:
        """The account's remaining credit in USD. Raises ``UpstreamError`` on any failure."""
        response = await self._send("GET", BALANCE_PATH, timeout_s=timeout_s)
        return _parse(response, BalanceResponse).usd

    async def _send(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float,
        json: Any = None,
        answering: asyncio.Event | None = None,
    ) -> httpx.Response:
        connect_s = min(self._http.timeout.connect or timeout_s, timeout_s)
        # httpx's timeouts bound each socket operation; asyncio.timeout bounds the call.
        timeout = httpx.Timeout(timeout_s, connect=connect_s)
        request = self._http.build_request(method, path, json=json, timeout=timeout)
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._http.send(request, stream=True)
                try:
                    if answering is not None:
                        answering.set()
                    await response.aread()
                finally:
                    await response.aclose()
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise UpstreamError(
                f"PixelLab did not answer within {timeout_s:g} s ({type(exc).__name__})",
                error_type=ErrorType.TIMEOUT,
            ) from exc
        except httpx.DecodingError as exc:
            raise UpstreamError(
                f"malformed response from PixelLab: {exc}", error_type=ErrorType.SERVER_ERROR
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            # A broken base URL is our configuration, not PixelLab being down: don't retry.
            raise UpstreamError(
                f"PixelLab URL is unusable: {exc}", error_type=ErrorType.INTERNAL
            ) from exc
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise UpstreamError(
                f"PixelLab request failed: {reason}", error_type=classify_exception(exc)
            ) from exc
        if not response.is_success:
            raise _status_error(response)
        return response


def _status_error(response: httpx.Response) -> UpstreamError:
    status = response.status_code
    return UpstreamError(
        _detail_message(response),
        error_type=classify_status(status),
        http_status=status,
        retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
    )


def _detail_message(response: httpx.Response) -> str:
    """PixelLab's FastAPI ``detail``: a string, or a list of ``{loc, msg}`` made readable."""
    fallback = f"PixelLab answered {response.status_code} {response.reason_phrase}".strip()
    try:
        body = response.json()
    except ValueError:
        return fallback
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail.strip():
        message = detail.strip()
    elif isinstance(detail, list) and detail:
        message = "; ".join(_format_detail_item(item) for item in detail)
    else:
        return fallback
    return message[:_MAX_MESSAGE_CHARS]


def _format_detail_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc") or [] if part != "body"]
    msg = str(item.get("msg", "invalid"))
    return f"{'.'.join(loc)}: {msg}" if loc else msg


def _parse(response: httpx.Response, model: type[_M]) -> _M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        # Inputs are left out: they may hold kilobytes of base64.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)[:3]
        )
        raise _malformed(response, problems) from exc


def _malformed(response: httpx.Response, problem: str) -> UpstreamError:
    return UpstreamError(
        f"malformed response from PixelLab: {problem}"[:_MAX_MESSAGE_CHARS],
        error_type=ErrorType.SERVER_ERROR,
        http_status=response.status_code,
    )
