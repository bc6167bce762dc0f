"""The mock PixelLab over real HTTP, driven by the real PixelLabClient."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from backend.config import PixelLabSettings
from backend.errors import ErrorType, UpstreamError
from backend.pixellab import PixelLabClient, create_http_client, png_size
from backend.pixellab.client import PIXFLUX_PATH
from fixtures import ThreadedUvicorn
from mocks import create_mock_app

E = ErrorType
KEY = "mock-secret-key"


def fields(
    description: str = "a green slime", width: int = 64, height: int = 64, **extra: Any
) -> dict[str, Any]:
    return {"description": description, "image_size": {"width": width, "height": height}, **extra}


@pytest.fixture(scope="module")
def mock() -> Iterator[ThreadedUvicorn]:
    with ThreadedUvicorn(create_mock_app(api_key=KEY)) as server:
        yield server


def pixellab_client(url: str, key: str | None = KEY) -> httpx.AsyncClient:
    settings = PixelLabSettings(base_url=url, api_key=SecretStr(key) if key else None)
    return create_http_client(settings)


@pytest.fixture
async def pixellab(mock: ThreadedUvicorn) -> AsyncIterator[PixelLabClient]:
    async with pixellab_client(mock.url) as http:
        yield PixelLabClient(http)


async def fails(
    client: PixelLabClient, body: dict[str, Any], timeout_s: float = 5.0
) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await client.generate_pixflux(body, timeout_s=timeout_s)
    return info.value


async def stats(mock: ThreadedUvicorn) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=mock.url) as http:
        body: dict[str, Any] = (await http.get("/_mock/stats")).json()
        return body


async def reset(mock: ThreadedUvicorn) -> None:
    async with httpx.AsyncClient(base_url=mock.url) as http:
        assert (await http.post("/_mock/reset")).status_code == 200


@pytest.mark.parametrize(("width", "height"), [(64, 64), (16, 64), (400, 400), (200, 37)])
async def test_success_returns_png_of_requested_size(
    pixellab: PixelLabClient, width: int, height: int
) -> None:
    image = await pixellab.generate_pixflux(fields(width=width, height=height), timeout_s=5.0)
    assert image.png[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.png[12:16] == b"IHDR"
    assert png_size(image.png) == (width, height) == (image.width, image.height)
    assert image.usage_usd == 0.01


async def test_same_request_same_bytes_different_request_different_bytes(
    pixellab: PixelLabClient,
) -> None:
    async def png(body: dict[str, Any]) -> bytes:
        return (await pixellab.generate_pixflux(body, timeout_s=5.0)).png

    first = await png(fields("a red dragon", seed=1))
    assert await png(fields("a red dragon", seed=1)) == first
    assert await png(fields("a blue dragon", seed=1)) != first
    assert await png(fields("a red dragon", seed=2)) != first


def _first_pixel_alpha(png: bytes) -> int:
    # One IDAT (the mock writes one); row 0 is a filter byte then RGBA pixels.
    length = int.from_bytes(png[33:37], "big")
    assert png[37:41] == b"IDAT"
    raw = zlib.decompress(png[41 : 41 + length])
    return raw[4]


async def test_no_background_gives_transparent_corners(pixellab: PixelLabClient) -> None:
    opaque = await pixellab.generate_pixflux(fields("a bat"), timeout_s=5.0)
    clear = await pixellab.generate_pixflux(fields("a bat", no_background=True), timeout_s=5.0)
    assert (_first_pixel_alpha(opaque.png), _first_pixel_alpha(clear.png)) == (255, 0)


ERROR_SCENARIOS = [
    ("failure", E.INVALID_REQUEST, 422, None),
    ("auth_error", E.AUTH, 401, None),
    ("server_error", E.SERVER_ERROR, 500, None),
    ("rate_limited", E.RATE_LIMITED, 429, 1.0),
    ("insufficient_credits", E.INSUFFICIENT_CREDITS, 402, None),
]


@pytest.mark.parametrize(("scenario", "error_type", "status", "retry_after"), ERROR_SCENARIOS)
async def test_scenario_by_marker(
    pixellab: PixelLabClient,
    scenario: str,
    error_type: ErrorType,
    status: int,
    retry_after: float | None,
) -> None:
    error = await fails(pixellab, fields(f"a goblin [mock:{scenario}]"))
    assert (error.error_type, error.http_status, error.retry_after_s) == (
        error_type,
        status,
        retry_after,
    )
    assert error.message


@pytest.mark.parametrize(("scenario", "error_type", "status", "retry_after"), ERROR_SCENARIOS)
async def test_scenario_by_server(
    scenario: str, error_type: ErrorType, status: int, retry_after: float | None
) -> None:
    with ThreadedUvicorn(create_mock_app(scenario=scenario)) as server:
        async with pixellab_client(server.url, key="any-token") as http:
            error = await fails(PixelLabClient(http), fields("a goblin"))
            # A marker beats the server's scenario.
            image = await PixelLabClient(http).generate_pixflux(
                fields("a goblin [mock:success]"), timeout_s=5.0
            )
    assert (error.error_type, error.http_status, error.retry_after_s) == (
        error_type,
        status,
        retry_after,
    )
    assert image.width == 64


async def test_failure_scenario_detail_is_readable(pixellab: PixelLabClient) -> None:
    error = await fails(pixellab, fields("an orc [mock:failure]"))
    assert error.message.startswith("description: Value error, the mock was told to reject")


async def test_timeout_scenario_by_marker(pixellab: PixelLabClient) -> None:
    started = time.perf_counter()
    error = await fails(pixellab, fields("a ghost [mock:timeout]"), timeout_s=0.3)
    elapsed = time.perf_counter() - started
    assert error.error_type is E.TIMEOUT
    assert 0.3 <= elapsed < 2.0


async def test_timeout_scenario_by_server() -> None:
    with ThreadedUvicorn(create_mock_app(scenario="timeout")) as server:
        async with pixellab_client(server.url) as http:
            error = await fails(PixelLabClient(http), fields("a ghost"), timeout_s=0.2)
    assert error.error_type is E.TIMEOUT


async def test_latency_marker_delays(pixellab: PixelLabClient) -> None:
    started = time.perf_counter()
    await pixellab.generate_pixflux(fields("a snail [mock-latency:400]"), timeout_s=5.0)
    slow = time.perf_counter() - started
    started = time.perf_counter()
    await pixellab.generate_pixflux(fields("a snail"), timeout_s=5.0)
    fast = time.perf_counter() - started
    assert slow >= 0.4
    assert fast < 0.3


async def test_server_latency_and_marker_override() -> None:
    with ThreadedUvicorn(create_mock_app(latency_ms=300)) as server:
        async with pixellab_client(server.url) as http:
            client = PixelLabClient(http)
            started = time.perf_counter()
            await client.generate_pixflux(fields("a crab"), timeout_s=5.0)
            slow = time.perf_counter() - started
            started = time.perf_counter()
            await client.generate_pixflux(fields("a crab [mock-latency:0]"), timeout_s=5.0)
            fast = time.perf_counter() - started
    assert slow >= 0.3
    assert fast < 0.25


@pytest.mark.parametrize(
    ("key", "message"), [(None, "Not authenticated"), ("wrong-key", "Invalid API token")]
)
async def test_bearer_token_is_checked(
    mock: ThreadedUvicorn, key: str | None, message: str
) -> None:
    await reset(mock)
    async with pixellab_client(mock.url, key=key) as http:
        error = await fails(PixelLabClient(http), fields("a mimic"))
        with pytest.raises(UpstreamError) as info:
            await PixelLabClient(http).balance_usd()
    assert (error.error_type, error.http_status, error.message) == (E.AUTH, 401, message)
    assert info.value.error_type is E.AUTH
    assert (await stats(mock))["generations"] == 0


async def test_balance_and_v1_prefix(mock: ThreadedUvicorn) -> None:
    await reset(mock)
    async with pixellab_client(f"{mock.url}/v1") as http:
        client = PixelLabClient(http)
        assert await client.balance_usd() == 100.0
        await client.generate_pixflux(fields("a coin"), timeout_s=5.0)
        assert await client.balance_usd() == pytest.approx(99.99)


async def test_mock_validates_like_pixellab(
    pixellab: PixelLabClient, mock: ThreadedUvicorn
) -> None:
    await reset(mock)
    too_small = await fails(pixellab, fields("a flea", width=8))
    assert too_small.error_type is E.INVALID_REQUEST
    assert too_small.message.startswith("image_size.width:")
    area = await fails(pixellab, fields("a line", width=16, height=32))
    assert "area" in area.message
    missing = await fails(pixellab, {"image_size": {"width": 64, "height": 64}})
    assert missing.message == "description: Field required"
    unknown = await fails(pixellab, fields("a thing [mock:explode]"))
    assert "unknown mock scenario 'explode'" in unknown.message
    async with httpx.AsyncClient(
        base_url=mock.url, headers={"Authorization": f"Bearer {KEY}"}
    ) as http:
        bitforge_big = await http.post("/generate-image-bitforge", json=fields("a tree", width=256))
        bitforge_ok = await http.post("/generate-image-bitforge", json=fields("a tree", width=200))
        not_json = await http.post("/generate-image-pixflux", content=b"{oops")
    assert bitforge_big.status_code == 422
    assert bitforge_ok.status_code == 200
    assert bitforge_ok.json()["usage"] == {"type": "generations", "generations": 1}
    assert not_json.status_code == 422
    assert not_json.json()["detail"][0]["type"] == "json_invalid"
    # Rejected calls never reach a scenario; only the good bitforge call counts.
    assert (await stats(mock))["generations"] == 1


async def test_stats_count_calls_and_reset(pixellab: PixelLabClient, mock: ThreadedUvicorn) -> None:
    await reset(mock)
    await pixellab.generate_pixflux(fields("a frog"), timeout_s=5.0)
    await pixellab.generate_pixflux(fields("a frog"), timeout_s=5.0)
    await fails(pixellab, fields("a toad [mock:server_error]"))
    assert await stats(mock) == {
        "generations": 3,
        "by_description": {"a frog": 2, "a toad [mock:server_error]": 1},
        "calls": {"a frog": {"answered:200": 2}, "a toad [mock:server_error]": {"answered:500": 1}},
        "in_flight": 0,
        "peak_in_flight": 1,
        "balance_checks": 0,
    }
    await reset(mock)
    assert await stats(mock) == {
        "generations": 0, "by_description": {}, "calls": {}, "in_flight": 0,
        "peak_in_flight": 0, "balance_checks": 0,
    }  # fmt: skip


async def test_fault_markers_fail_the_first_calls_then_follow_the_scenario(
    pixellab: PixelLabClient, mock: ThreadedUvicorn
) -> None:
    await reset(mock)
    body = fields("a flaky frog [mock-fail:503*2][mock-retry-after:7]")
    for _ in range(2):
        error = await fails(pixellab, body)
        assert error.http_status == 503 and error.retry_after_s == 7
    assert (await pixellab.generate_pixflux(body, timeout_s=5.0)).png
    slow_toad = fields("a slow toad [mock:rate_limited][mock-retry-after:30]")
    throttled = await fails(pixellab, slow_toad)
    assert throttled.http_status == 429 and throttled.retry_after_s == 30
    calls = (await stats(mock))["calls"]
    assert calls["a flaky frog [mock-fail:503*2][mock-retry-after:7]"] == {
        "answered:503": 2,
        "answered:200": 1,
    }


async def test_a_slow_body_is_answered_before_it_arrives(
    pixellab: PixelLabClient, mock: ThreadedUvicorn
) -> None:
    # [mock-body-ms:N]: headers at once, the body N ms later. The client says when the
    # answer began (what a stop waits on: that answer is paid for), not when it ended.
    await reset(mock)
    description = "a slow-bodied frog [mock-body-ms:1500]"
    answering = asyncio.Event()
    call = asyncio.create_task(
        pixellab.generate(PIXFLUX_PATH, fields(description), timeout_s=5.0, answering=answering)
    )
    await asyncio.wait_for(answering.wait(), 5)
    assert not call.done()  # the body is still on its way
    assert (await stats(mock))["calls"][description] == {"answered:200": 1}
    assert (await call).frames[0].startswith(b"\x89PNG")


def test_unknown_server_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        create_mock_app(scenario="explode")
