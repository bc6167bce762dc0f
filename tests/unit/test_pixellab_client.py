"""PixelLabClient against httpx.MockTransport: response shapes, error mapping, secrets."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from backend.config import PixelLabSettings
from backend.errors import ErrorType, UpstreamError
from backend.models import SpriteRequest
from backend.normalize import canonical_fields
from backend.pixellab import GeneratedImage, PixelLabClient, create_http_client, png_size
from mocks.png import sprite_png

E = ErrorType
API_KEY = "sk-live-0123456789abcdef"
FIELDS: dict[str, Any] = {"description": "a knight", "image_size": {"width": 48, "height": 32}}
PNG = sprite_png(48, 32, b"seed")
PNG_B64 = base64.b64encode(PNG).decode()

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def make_client(handler: Handler, *, api_key: str | None = API_KEY) -> PixelLabClient:
    settings = PixelLabSettings(
        base_url="https://pixellab.test/v1",
        api_key=SecretStr(api_key) if api_key is not None else None,
        connect_timeout_s=2.0,
    )
    return PixelLabClient(create_http_client(settings, transport=httpx.MockTransport(handler)))


def reply(status: int, body: Any = None, **kwargs: Any) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, **kwargs)

    return handler


async def generate(handler: Handler, **kwargs: Any) -> GeneratedImage:
    return await make_client(handler, **kwargs).generate_pixflux(FIELDS, timeout_s=5.0)


async def upstream_error(handler: Handler, **kwargs: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await generate(handler, **kwargs)
    return info.value


@pytest.mark.parametrize("encoded", [PNG_B64, f"data:image/png;base64,{PNG_B64}"])
async def test_success_decodes_both_base64_forms(encoded: str) -> None:
    body = {"image": {"type": "base64", "base64": encoded}, "usage": {"type": "usd", "usd": 0.01}}
    image = await generate(reply(200, body))
    assert image.png == PNG
    assert (image.width, image.height) == (48, 32)
    assert (image.usage_usd, image.usage_generations) == (0.01, None)


@pytest.mark.parametrize(
    ("usage", "usd", "generations"),
    [
        ({"type": "usd", "usd": 0.02}, 0.02, None),
        ({"type": "generations", "generations": 1}, None, 1),
        (None, None, None),
    ],
)
async def test_success_reads_both_usage_forms(
    usage: dict[str, Any] | None, usd: float | None, generations: int | None
) -> None:
    body: dict[str, Any] = {"image": {"type": "base64", "base64": PNG_B64}}
    if usage is not None:
        body["usage"] = usage
    image = await generate(reply(200, body))
    assert (image.usage_usd, image.usage_generations) == (usd, generations)
    assert "png" not in repr(image)  # image bytes never end up in logs


async def test_unknown_usage_form_keeps_the_image() -> None:
    body = {"image": {"base64": PNG_B64}, "usage": {"type": "tokens", "tokens": 9}}
    image = await generate(reply(200, body))
    assert image.png == PNG
    assert (image.usage_usd, image.usage_generations) == (None, None)


async def test_request_carries_fields_bearer_and_timeouts() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"image": {"type": "base64", "base64": PNG_B64}})

    request = SpriteRequest.model_validate(
        {"description": "  a   knight ", "image_size": {"width": 48, "height": 32}, "seed": 3}
    )
    fields = canonical_fields(request)
    await make_client(handler).generate_pixflux(fields, timeout_s=7.5)
    (sent,) = seen
    assert sent.method == "POST"
    assert sent.url == "https://pixellab.test/v1/generate-image-pixflux"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(sent.content) == {
        "description": "a knight",
        "image_size": {"width": 48, "height": 32},
        "seed": 3,
    }
    assert sent.extensions["timeout"] == {"connect": 2.0, "read": 7.5, "write": 7.5, "pool": 7.5}


async def test_no_api_key_sends_no_authorization() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"detail": "Not authenticated"})

    error = await upstream_error(handler, api_key=None)
    assert "authorization" not in seen[0].headers
    assert error.error_type is E.AUTH


@pytest.mark.parametrize(
    "body",
    [
        {"type": "usd", "usd": 12.3},
        {"credits": {"type": "usd", "usd": 12.3}, "subscription": {"tier": "pro"}},
    ],
    ids=["v1", "v2"],
)
async def test_balance_both_shapes(body: dict[str, Any]) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=body)

    assert await make_client(handler).balance_usd() == 12.3
    assert seen == ["https://pixellab.test/v1/balance"]


async def test_balance_errors_are_mapped() -> None:
    with pytest.raises(UpstreamError) as info:
        await make_client(reply(200, {"credits": "lots"})).balance_usd()
    assert info.value.error_type is E.SERVER_ERROR


VALIDATION_DETAIL = [
    {
        "type": "less_than_equal",
        "loc": ["body", "image_size", "width"],
        "msg": "Input should be less than or equal to 400",
        "input": 999,
        "ctx": {"le": 400},
    },
    {"type": "missing", "loc": ["body", "description"], "msg": "Field required", "input": {}},
]


@pytest.mark.parametrize(
    ("status", "detail", "headers", "error_type", "message", "retry_after"),
    [
        (401, "Invalid API token", {}, E.AUTH, "Invalid API token", None),
        (402, "Insufficient credits", {}, E.INSUFFICIENT_CREDITS, "Insufficient credits", None),
        (403, "Forbidden", {}, E.AUTH, "Forbidden", None),
        (404, "Not Found", {}, E.INVALID_REQUEST, "Not Found", None),
        (408, "Request Timeout", {}, E.TIMEOUT, "Request Timeout", None),
        (
            422,
            VALIDATION_DETAIL,
            {},
            E.INVALID_REQUEST,
            "image_size.width: Input should be less than or equal to 400; "
            "description: Field required",
            None,
        ),
        (429, "Too many concurrent jobs", {"Retry-After": "3"}, E.RATE_LIMITED, None, 3.0),
        (429, "Too many requests", {}, E.RATE_LIMITED, "Too many requests", None),
        (500, "boom", {}, E.SERVER_ERROR, "boom", None),
        (502, "Bad gateway", {}, E.SERVER_ERROR, "Bad gateway", None),
        (503, "Overloaded", {"Retry-After": "20"}, E.SERVER_ERROR, "Overloaded", 20.0),
        (504, "Gateway timeout", {}, E.SERVER_ERROR, "Gateway timeout", None),
        (529, "Rate limit exceeded", {}, E.RATE_LIMITED, "Rate limit exceeded", None),
    ],
)
async def test_error_statuses_are_mapped(
    status: int,
    detail: Any,
    headers: dict[str, str],
    error_type: ErrorType,
    message: str | None,
    retry_after: float | None,
) -> None:
    error = await upstream_error(reply(status, {"detail": detail}, headers=headers))
    assert error.error_type is error_type
    assert error.http_status == status
    assert error.message == (message or detail)
    assert error.retry_after_s == retry_after


async def test_error_without_json_detail_falls_back_to_status_line() -> None:
    error = await upstream_error(reply(502, content=b"<html>nginx</html>"))
    assert error.message == "PixelLab answered 502 Bad Gateway"
    assert error.error_type is E.SERVER_ERROR


@pytest.mark.parametrize(
    ("exc", "error_type"),
    [
        (httpx.ReadTimeout("read timed out"), E.TIMEOUT),
        (httpx.ConnectTimeout("connect timed out"), E.TIMEOUT),
        (httpx.ConnectError("connection refused"), E.NETWORK),
        (httpx.RemoteProtocolError("peer closed connection"), E.NETWORK),
    ],
)
async def test_transport_errors_are_mapped(exc: httpx.HTTPError, error_type: ErrorType) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    error = await upstream_error(handler)
    assert error.error_type is error_type
    assert error.__cause__ is exc
    assert error.http_status is None


async def test_whole_call_is_bounded_by_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    client = make_client(handler)
    with pytest.raises(UpstreamError) as info:
        await client.generate_pixflux(FIELDS, timeout_s=0.05)
    assert info.value.error_type is E.TIMEOUT
    assert isinstance(info.value.__cause__, TimeoutError)


def _corrupt_ihdr_crc(png: bytes) -> bytes:
    return png[:29] + bytes([png[29] ^ 0xFF]) + png[30:]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "json"),
        (b"[]", "body"),
        (json.dumps({"usage": {"type": "usd", "usd": 0.01}}).encode(), "image"),
        (json.dumps({"image": {"type": "base64", "base64": "!!!"}}).encode(), "base64"),
        (
            json.dumps(
                {"image": {"type": "base64", "base64": base64.b64encode(b"GIF89a...").decode()}}
            ).encode(),
            "not a PNG",
        ),
        (
            json.dumps(
                {"image": {"base64": base64.b64encode(_corrupt_ihdr_crc(PNG)).decode()}}
            ).encode(),
            "checksum",
        ),
    ],
    ids=["json", "not-object", "no-image", "bad-base64", "not-png", "bad-crc"],
)
async def test_malformed_bodies_are_server_errors(content: bytes, problem: str) -> None:
    error = await upstream_error(reply(200, content=content))
    assert error.error_type is E.SERVER_ERROR
    assert error.message.startswith("malformed response")
    assert problem.lower() in error.message.lower()
    assert error.__cause__ is not None


def test_png_size_reads_ihdr() -> None:
    assert png_size(sprite_png(17, 301, b"x")) == (17, 301)
    with pytest.raises(ValueError):
        png_size(PNG[:20])


async def test_api_key_never_shows() -> None:
    settings = PixelLabSettings(api_key=SecretStr(API_KEY))
    http = create_http_client(settings, transport=httpx.MockTransport(reply(401, {"detail": "x"})))
    client = PixelLabClient(http)
    shown = [repr(settings), repr(http), repr(http.headers), repr(http.auth), repr(client)]
    with pytest.raises(UpstreamError) as info:
        await client.generate_pixflux(FIELDS, timeout_s=1.0)
    shown += [str(info.value), repr(info.value), repr(info.value.body())]
    assert "Authorization" not in http.headers
    assert not [text for text in shown if API_KEY in text]


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_metrics_count_outcomes() -> None:
    ok = {"outcome": "ok"}
    limited = {"outcome": "rate_limited"}
    before = (
        _sample("spritequeue_pixellab_requests_total", ok),
        _sample("spritequeue_pixellab_requests_total", limited),
        _sample("spritequeue_pixellab_request_duration_seconds_count"),
    )
    await generate(reply(200, {"image": {"type": "base64", "base64": PNG_B64}}))
    await upstream_error(reply(429, {"detail": "slow down"}))
    after = (
        _sample("spritequeue_pixellab_requests_total", ok),
        _sample("spritequeue_pixellab_requests_total", limited),
        _sample("spritequeue_pixellab_request_duration_seconds_count"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1.0, 1.0, 2.0]
