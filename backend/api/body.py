"""Reading and validating request bodies: 415, 413, 400 and 422 with field and reason."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from backend.errors import BadRequest, InvalidRequest, PayloadTooLarge, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request, *, max_bytes: int) -> Any:
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
        details = field_errors(exc)
        first = details[0]
        raise InvalidRequest(f"{first['field']}: {first['reason']}", details=details) from exc
