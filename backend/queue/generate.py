"""One PixelLab call for a job: its inputs loaded by digest, the operation's endpoint, and the
answer made into one cache entry (a sprite sheet when the call drew several frames).

The record's request names each input image by digest (``{"sha256": ...}``, see
``backend.inputs``); here the bytes come back from the input store and go to PixelLab as
``{"type": "base64", "base64": ...}``, the only place base64 of an input is ever built.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

from backend import sprites
from backend.cache import CachedImage
from backend.errors import ErrorType, UpstreamError
from backend.models import JobRecord
from backend.operations import ENDPOINTS
from backend.pixellab import PixelLabClient
from backend.store.inputs import InputStore

ANIMATIONS = frozenset({"animate_with_text", "animate_with_skeleton"})


def digests(fields: dict[str, Any]) -> list[str]:
    """Every input digest a request names, in field order."""
    found = []
    for value in fields.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and set(item) == {"sha256"}:
                found.append(str(item["sha256"]))
    return found


def upstream_body(fields: dict[str, Any], pngs: dict[str, bytes]) -> dict[str, Any]:
    """The PixelLab body: ``operation`` left out, each digest replaced by its image.

    Raises ``UpstreamError`` (``invalid_request``: running it again cannot help) when an
    input has left the store."""

    def image(item: Any) -> Any:
        if not (isinstance(item, dict) and set(item) == {"sha256"}):
            return item
        png = pngs.get(str(item["sha256"]))
        if png is None:
            raise UpstreamError(
                "an input image is no longer stored; submit the request again",
                error_type=ErrorType.INVALID_REQUEST,
            )
        return {"type": "base64", "base64": base64.b64encode(png).decode("ascii")}

    return {
        name: [image(item) for item in value] if isinstance(value, list) else image(value)
        for name, value in fields.items()
        if name != "operation"
    }


@dataclass
class Generator:
    pixellab: PixelLabClient
    inputs: InputStore | None

    async def __call__(
        self, record: JobRecord, *, answering: asyncio.Event | None = None
    ) -> CachedImage:
        """Call PixelLab for ``record``; raises ``UpstreamError`` on any failure.
        ``answering`` is set once PixelLab has begun to answer (``PixelLabClient.generate``)."""
        fields = record.request
        operation = str(fields.get("operation", "pixflux"))
        needed = digests(fields)
        pngs = await self.inputs.get(needed) if needed and self.inputs is not None else {}
        generated = await self.pixellab.generate(
            ENDPOINTS[operation], upstream_body(fields, pngs), timeout_s=record.timeout_s,
            animation=operation in ANIMATIONS, answering=answering,
        )  # fmt: skip
        try:
            png, width, height = sprites.sheet(generated.frames)
        except sprites.NotAPng as exc:
            raise UpstreamError(
                f"malformed response from PixelLab: {exc}", error_type=ErrorType.SERVER_ERROR
            ) from exc
        frames = len(generated.frames)
        return CachedImage.new(
            record.cache_key, png, width=width * frames, height=height,
            request=record.request, frames=frames,
        )  # fmt: skip
