"""A mock PixelLab: a real HTTP server with PixelLab's v1 contract and scripted failures.

The scenario comes from the server (``scenario=``) or from a ``[mock:SCENARIO]`` marker in
the description; latency from ``latency_ms=`` or a ``[mock-latency:MS]`` marker. Successful
calls return a real PNG of the requested size, deterministic in the request body. Routes are
served both at the root and under ``/v1``, so either form of base URL works.

Two more markers script faults per prompt: ``[mock-fail:503*2]`` answers the first two
calls with that prompt 503 (any 4xx/5xx status), then follows the scenario;
``[mock-retry-after:30]`` sets the ``Retry-After`` of a 429 or 503 answer (default 1 s);
``[mock-body-ms:1500]`` sends a successful answer's headers at once and its body that much
later (a large answer on a slow link: PixelLab has begun to answer, and a client that hangs
up now has been answered all the same).

``GET /_mock/stats`` and ``POST /_mock/reset`` let tests count the generations that got
through authentication and validation ("PixelLab got exactly one call"), how each call
ended per prompt (``calls``: answered by status, or ``abandoned`` when the client hung up
first) and the most calls that were ever in progress at once (``peak_in_flight``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections import Counter
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from mocks.contract import (
    BITFORGE_MAX_SIDE,
    IMAGE_OPERATIONS,
    MAX_SIDE,
    parse_generation,
    parse_image_operation,
)
from mocks.png import sprite_png

SCENARIOS = frozenset(
    {
        "success",
        "failure",
        "timeout",
        "auth_error",
        "server_error",
        "rate_limited",
        "insufficient_credits",
    }
)
_SCENARIO_MARKER = re.compile(r"\[mock:([a-z_]+)\]")
_LATENCY_MARKER = re.compile(r"\[mock-latency:(\d+)\]")
_FAIL_MARKER = re.compile(r"\[mock-fail:([45]\d\d)\*(\d+)\]")
_RETRY_AFTER_MARKER = re.compile(r"\[mock-retry-after:(\d+)\]")
_BODY_DELAY_MARKER = re.compile(r"\[mock-body-ms:(\d+)\]")
_HANG_S = 3600.0
_START_BALANCE_USD = 100.0
_COST_USD = 0.01

# Fixed answers of the failure scenarios: (status, detail, extra headers).
_FAILURES: dict[str, tuple[int, Any, dict[str, str]]] = {
    "auth_error": (401, "Invalid API token", {"WWW-Authenticate": "Bearer"}),
    "insufficient_credits": (402, "Insufficient credits", {}),
    "rate_limited": (429, "Too many concurrent jobs", {"Retry-After": "1"}),
    "server_error": (500, "Internal server error (mock)", {}),
}


class _MockPixelLab:
    def __init__(self, scenario: str, latency_ms: int, api_key: str | None) -> None:
        self.scenario = self.initial_scenario = scenario
        self.latency_ms = latency_ms
        self.api_key = api_key
        self.by_description: Counter[str] = Counter()
        self.spent_usd = 0.0
        # per prompt: how each call ended ("answered:<status>" or "abandoned")
        self.calls: dict[str, Counter[str]] = {}
        self.in_flight = 0
        self.peak_in_flight = 0
        self.balance_checks = 0

    def _unauthorized(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _error(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
        if self.api_key is not None and not hmac.compare_digest(token, self.api_key):
            return _error(401, "Invalid API token", {"WWW-Authenticate": "Bearer"})
        return None

    async def pixflux(self, request: Request) -> Response:
        body = await request.body()
        parsed = parse_generation(body, max_side=MAX_SIDE)
        return await self._generate(request, body, parsed, {"type": "usd", "usd": _COST_USD})

    async def bitforge(self, request: Request) -> Response:
        # Bitforge answers with the other usage form, so clients meet both.
        body = await request.body()
        parsed = parse_generation(body, max_side=BITFORGE_MAX_SIDE)
        return await self._generate(
            request, body, parsed, {"type": "generations", "generations": 1}
        )

    async def image_operation(self, request: Request) -> Response:
        """rotate, inpaint and the two animations; markers are read from the description
        (or the action); rotate and animate-with-skeleton have neither and follow the
        server's scenario."""
        body = await request.body()
        parsed = parse_image_operation(body, request.url.path.rsplit("/", 1)[-1])
        return await self._generate(request, body, parsed, {"type": "usd", "usd": _COST_USD})

    async def _generate(
        self, request: Request, body: bytes, parsed: Any, usage: dict[str, Any]
    ) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if isinstance(parsed, list):
            return JSONResponse({"detail": parsed}, status_code=422)
        text = parsed.text
        scenario = _marker(_SCENARIO_MARKER, text) or self.scenario
        if scenario not in SCENARIOS:
            return _error(422, [_unknown_scenario(scenario, text)])
        # Calls without a prompt are counted under their path, e.g. "[rotate]".
        prompt = text or f"[{request.url.path.rsplit('/', 1)[-1]}]"
        self.by_description[prompt] += 1
        ledger = self.calls.setdefault(prompt, Counter())
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            response = await self._answer(request, parsed, body, scenario, usage)
        except asyncio.CancelledError:
            ledger["abandoned"] += 1
            raise
        finally:
            self.in_flight -= 1
        status = response.status_code
        if status != 499 and await request.is_disconnected():
            status = 499  # the client hung up while the answer was being drawn
        ledger["abandoned" if status == 499 else f"answered:{status}"] += 1
        return response

    async def _answer(
        self,
        request: Request,
        parsed: Any,
        body: bytes,
        scenario: str,
        usage: dict[str, Any],
    ) -> Response:
        description = parsed.text
        counted = description or f"[{request.url.path.rsplit('/', 1)[-1]}]"
        latency = _marker(_LATENCY_MARKER, description)
        delay_s = (int(latency) if latency is not None else self.latency_ms) / 1000
        if delay_s > 0 and not await _sleep_while_connected(request, delay_s):
            return _error(499, "client went away")
        if (fail := _FAIL_MARKER.search(description)) is not None:
            status, times = int(fail.group(1)), int(fail.group(2))
            if self.by_description[counted] <= times:
                retry_after = _marker(_RETRY_AFTER_MARKER, description) or "1"
                headers = {"Retry-After": retry_after} if status in (429, 503) else {}
                return _error(status, f"mock-fail: call {self.by_description[counted]}",
                              headers)  # fmt: skip
        if scenario == "success":
            self.spent_usd += _COST_USD
            if parsed.frames > 1:
                images = [_image(parsed, body + bytes([i])) for i in range(parsed.frames)]
                answer: dict[str, Any] = {"images": images, "usage": usage}
            else:
                answer = {"image": _image(parsed, body), "usage": usage}
            body_ms = _marker(_BODY_DELAY_MARKER, description)
            if body_ms is not None:
                return _SlowBody(answer, int(body_ms) / 1000)
            return JSONResponse(answer)
        if scenario == "timeout":
            await _sleep_while_connected(request, _HANG_S)
            return _error(504, "mock timeout scenario: gave up after an hour")
        if scenario == "failure":
            return _error(422, [_told_to_fail(description)])
        status, detail, headers = _FAILURES[scenario]
        asked = _marker(_RETRY_AFTER_MARKER, description)
        if status == 429 and asked is not None:
            headers = {**headers, "Retry-After": asked}
        return _error(status, detail, headers)

    async def balance(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if self.scenario == "auth_error":
            return _error(401, "Invalid API token", {"WWW-Authenticate": "Bearer"})
        self.balance_checks += 1
        usd = (
            0.0
            if self.scenario == "insufficient_credits"
            else round(_START_BALANCE_USD - self.spent_usd, 6)
        )
        generations = sum(self.by_description.values())
        return JSONResponse(
            {
                "credits": {"type": "usd", "usd": usd},
                "subscription": {"type": "mock", "generations_used": generations},
            }
        )

    async def stats(self, request: Request) -> Response:
        by_description = dict(self.by_description)
        return JSONResponse(
            {
                "generations": sum(by_description.values()),
                "by_description": by_description,
                "calls": {prompt: dict(ends) for prompt, ends in self.calls.items()},
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "balance_checks": self.balance_checks,
            }
        )

    async def set_scenario(self, request: Request) -> Response:
        """``POST /_mock/scenario {"scenario": ...}``: the server's scenario from now on (an
        account that loses its key or credit, then gets it back)."""
        scenario = (await request.json()).get("scenario")
        if scenario not in SCENARIOS:
            return _error(422, f"unknown scenario {scenario!r}")
        self.scenario = scenario
        return JSONResponse({"scenario": scenario})

    async def reset(self, request: Request) -> Response:
        self.scenario = self.initial_scenario
        self.by_description.clear()
        self.calls.clear()
        self.peak_in_flight = self.in_flight
        self.balance_checks = 0
        self.spent_usd = 0.0
        return JSONResponse({"generations": 0, "by_description": {}})


class _SlowBody(JSONResponse):
    """A JSON answer whose headers go out at once and whose body follows ``delay_s`` later."""

    def __init__(self, content: Any, delay_s: float) -> None:
        super().__init__(content)
        self.delay_s = delay_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code,
             "headers": self.raw_headers}
        )  # fmt: skip
        await asyncio.sleep(self.delay_s)
        await send({"type": "http.response.body", "body": self.body})


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _marker(pattern: re.Pattern[str], description: str) -> str | None:
    match = pattern.search(description)
    return match.group(1) if match else None


def _unknown_scenario(scenario: str, description: str) -> dict[str, Any]:
    known = ", ".join(sorted(SCENARIOS))
    return {
        "type": "value_error",
        "loc": ["body", "description"],
        "msg": f"Value error, unknown mock scenario {scenario!r} (known: {known})",
        "input": description,
    }


def _told_to_fail(description: str) -> dict[str, Any]:
    return {
        "type": "value_error",
        "loc": ["body", "description"],
        "msg": "Value error, the mock was told to reject this request",
        "input": description,
        "ctx": {"error": "mock failure scenario"},
    }


def _image(request: Any, body: bytes) -> dict[str, str]:
    # The raw body seeds the drawing: same bytes in, same PNG out.
    seed = hashlib.sha256(body).digest()
    size = request.image_size
    png = sprite_png(size.width, size.height, seed, transparent=request.no_background)
    return {"type": "base64", "base64": base64.b64encode(png).decode("ascii")}


async def _sleep_while_connected(request: Request, seconds: float) -> bool:
    """Sleep ``seconds``; return ``False`` early if the client disconnects first.

    Without this a hung request would outlive its client and hold up server shutdown.
    """
    try:
        async with asyncio.timeout(seconds):
            while (await request.receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return True
    return False


def create_mock_app(
    *, scenario: str = "success", latency_ms: int = 0, api_key: str | None = None
) -> Starlette:
    """The mock as an ASGI app. Raises ``ValueError`` for an unknown scenario."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(sorted(SCENARIOS))}")
    if latency_ms < 0:
        raise ValueError("latency_ms must not be negative")
    mock = _MockPixelLab(scenario, latency_ms, api_key or None)
    routes = [
        Route("/generate-image-pixflux", mock.pixflux, methods=["POST"]),
        Route("/generate-image-bitforge", mock.bitforge, methods=["POST"]),
        *(Route(f"/{path}", mock.image_operation, methods=["POST"]) for path in IMAGE_OPERATIONS),
        Route("/balance", mock.balance, methods=["GET"]),
        Route("/_mock/stats", mock.stats, methods=["GET"]),
        Route("/_mock/reset", mock.reset, methods=["POST"]),
        Route("/_mock/scenario", mock.set_scenario, methods=["POST"]),
    ]
    return Starlette(routes=[*routes, Mount("/v1", routes=routes)])


def run_mock(
    host: str = "127.0.0.1",
    port: int = 8700,
    *,
    scenario: str = "success",
    latency_ms: int = 0,
    api_key: str | None = None,
) -> None:
    """Serve the mock with uvicorn until interrupted (``spritequeue mock-pixellab``)."""
    app = create_mock_app(scenario=scenario, latency_ms=latency_ms, api_key=api_key)
    # A hung "timeout" request must not block Ctrl-C for an hour.
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=1)
