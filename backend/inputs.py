"""Image inputs of a submission: an uploaded PNG (base64) or one of the caller's own jobs.

An upload is decoded and checked to be a PNG as it is validated, and from then on is known by
the SHA-256 of its bytes: that digest, never the base64 text, is what the job's canonical
request, its cache key and its record hold (``model_dump`` writes ``{"sha256": ...}``). The
bytes themselves go to a content-addressed Redis key (``store.inputs``) for the worker.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

from backend.sprites import NotAPng, png_info

_DATA_URL_MARK = ";base64,"


def strip_data_url(text: str) -> str:
    """The base64 payload of ``text``, with any ``data:...;base64,`` prefix and whitespace
    removed."""
    if text.startswith("data:") and _DATA_URL_MARK in text:
        text = text.split(_DATA_URL_MARK, 1)[1]
    return "".join(text.split())


class Base64Image(BaseModel):
    """A PNG sent inline: ``{"type": "base64", "base64": "..."}`` (a ``data:`` URL works too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["base64"] = "base64"
    base64: str = Field(description="The PNG's bytes in base64, with or without a `data:` prefix.")
    _png: bytes = PrivateAttr(b"")
    _sha256: str = PrivateAttr("")
    _size: tuple[int, int] = PrivateAttr((0, 0))

    @field_validator("base64")
    @classmethod
    def _strip(cls, value: str) -> str:
        return strip_data_url(value)

    @model_validator(mode="after")
    def _decode(self) -> Base64Image:
        try:
            png = base64.b64decode(self.base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not valid base64") from exc
        try:
            info = png_info(png)
        except NotAPng as exc:
            raise ValueError(str(exc)) from exc
        self._png, self._sha256 = png, hashlib.sha256(png).hexdigest()
        self._size = (info.width, info.height)
        return self

    @classmethod
    def of(cls, png: bytes) -> Base64Image:
        """An input made from PNG bytes we already hold (a chained job's result)."""
        return cls(base64=base64.b64encode(png).decode("ascii"))

    @property
    def png(self) -> bytes:
        return self._png

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @model_serializer(mode="plain")
    def _by_digest(self) -> dict[str, Any]:
        # The canonical form and the job record name an image by its digest only.
        return {"sha256": self._sha256}


class JobImage(BaseModel):
    """One of the caller's own completed jobs as an input: ``{"type": "job", "job_id": ...}``.

    ``frame`` picks one frame of a multi-frame result (from 0; default 0). It is resolved at
    submission (``queue.inputs``) into the image itself, so the cache key covers the pixels.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["job"]
    job_id: Annotated[str, Field(min_length=1, max_length=64)]
    frame: Annotated[int, Field(ge=0, le=99, strict=True)] | None = None


def _kind(value: Any) -> str | None:
    # PixelLab's own image objects may leave ``type`` out: it defaults to base64.
    if isinstance(value, dict):
        return str(value.get("type", "base64"))
    return getattr(value, "type", None)


ImageInput = Annotated[
    Annotated[Base64Image, Tag("base64")] | Annotated[JobImage, Tag("job")],
    Discriminator(_kind),
]
