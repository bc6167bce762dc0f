"""Reading and validating request bodies: 415, 413, 400 and 422 with field and reason."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from backend.errors import BadRequest, InvalidRequest, PayloadTooLarge, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request, *, max_bytes: int) -> Any:
    return parse_json(await read_body(request, max_bytes=max_bytes))


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """The raw body of an ``application/json`` request; raises 415 or 413."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("the body must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    return bytes(body)


def parse_json(body: bytes) -> Any:
    """Raises ``BadRequest`` (400) when ``body`` is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: too deep
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "reason": err["msg"]}
        for err in exc.errors(include_url=False)
    ]


def validate(model: type[M], data: Any) -> M:
    """Validate ``data``; raises InvalidRequest (422) naming each bad field and why."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc) from exc


def invalid_request(exc: ValidationError) -> InvalidRequest:
    """A 422 naming each bad field of ``exc`` and why."""
    details = field_errors(exc)
    first = details[0]
    return InvalidRequest(f"{first['field']}: {first['reason']}", details=details)


def carries_images(data: Any) -> bool:
    """Whether a submission holds an inline image: a top-level field (or an item of a
    top-level list) that is an object with a ``base64`` key."""
    if not isinstance(data, dict):
        return False
    values = [v for value in data.values() for v in (value if isinstance(value, list) else [value])]
    return any(isinstance(value, dict) and "base64" in value for value in values)
