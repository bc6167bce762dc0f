"""JSON in place of arq's default pickle, for jobs and for results.

arq stores job payloads and results through these two functions; nothing pickled ever goes
through Redis. Results are ours to ignore (the job record holds the real outcome), but arq
serialises failures too, so exceptions are reduced to their type and message.
"""

from __future__ import annotations

import json
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, BaseException):
        return {"exception": type(value).__name__, "message": str(value)}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def serialize(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=_default, separators=(",", ":")).encode()


def deserialize(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    if isinstance(data.get("a"), list):  # arq expects the positional args as a tuple
        data["a"] = tuple(data["a"])
    return data
