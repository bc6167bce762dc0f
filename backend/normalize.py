"""Canonical form of a request and its SHA-256 key.

Validation already collapsed whitespace and lower-cased enums; here defaults are dropped
and keys sorted, so two requests that mean the same sprite give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from backend.models import SpriteRequest

# Fields that steer how we run the job, not what PixelLab draws.
_NOT_IN_KEY = frozenset({"timeout_s"})


def canonical_fields(request: SpriteRequest) -> dict[str, Any]:
    """The request as PixelLab should see it: defaults and our own fields left out."""
    return request.model_dump(mode="json", exclude_defaults=True, exclude=set(_NOT_IN_KEY))


def canonical_json(request: SpriteRequest) -> str:
    fields = canonical_fields(request)
    # text_guidance_scale 8 and 8.0 mean the same: JSON numbers are normalised through float.
    if "text_guidance_scale" in fields:
        fields["text_guidance_scale"] = float(fields["text_guidance_scale"])
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(request: SpriteRequest) -> str:
    return hashlib.sha256(canonical_json(request).encode()).hexdigest()
