"""Query-parameter parsing with clear 422s instead of 500s."""

from __future__ import annotations

from starlette.requests import Request

from backend.errors import InvalidRequest


def int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    # isascii(): "²".isdigit() is True but int("²") fails
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        reason = f"must be a whole number from {low} to {high}"
        raise InvalidRequest(f"{name}: {reason}", details=[{"field": name, "reason": reason}])
    return int(raw)
