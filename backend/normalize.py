"""Canonical form of a request and its SHA-256 key.

Validation already collapsed whitespace and lower-cased enums; here defaults are dropped
and keys sorted, so two requests that mean the same sprite give the same bytes. An input
image appears as ``{"sha256": ...}`` of its decoded bytes (``backend.inputs``), so the same
pixels sent by anyone, inline or by chaining, give the same key; base64 text never does.
``operation`` is left out for pixflux (the default, so keys from before operations existed
still match) and kept for every other operation.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

# Fields that steer how we run the job, not what PixelLab draws.
_NOT_IN_KEY = frozenset({"timeout_s", "priority", "callback_url", "variants"})
# Numbers that PixelLab reads as floats: 8 and 8.0 must give the same key.
_FLOATS = frozenset({"text_guidance_scale", "image_guidance_scale", "guidance_scale",
                     "skeleton_guidance_scale", "coverage_percentage"})  # fmt: skip


def canonical_fields(request: BaseModel) -> dict[str, Any]:
    """The request as PixelLab should see it: defaults and our own fields left out, images
    by digest, ``operation`` kept unless it is pixflux."""
    fields = request.model_dump(mode="json", exclude_defaults=True, exclude=set(_NOT_IN_KEY))
    operation = getattr(request, "operation", "pixflux")
    if operation != "pixflux":
        fields["operation"] = operation
    return fields


def canonical_json(request: BaseModel) -> str:
    fields = canonical_fields(request)
    for name in _FLOATS & fields.keys():
        fields[name] = float(fields[name])
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(request: BaseModel) -> str:
    return hashlib.sha256(canonical_json(request).encode()).hexdigest()
