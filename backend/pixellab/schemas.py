"""PixelLab's response bodies as pydantic models, and the decoded image our code passes on.

The models accept every shape PixelLab has been seen to send (see docs/pixellab.md): base64 with
or without a ``data:`` URL prefix, usage in dollars or in generations, and the balance in its
v1 and v2 forms. Unknown extra fields are ignored so an additive API change does not break us.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DATA_URL_MARK = ";base64,"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Base64Image(_Lenient):
    type: Literal["base64"] = "base64"
    base64: str

    @field_validator("base64")
    @classmethod
    def _strip_data_url(cls, value: str) -> str:
        if value.startswith("data:") and _DATA_URL_MARK in value:
            value = value.split(_DATA_URL_MARK, 1)[1]
        return "".join(value.split())

    def decode(self) -> bytes:
        """The raw bytes; raises ``ValueError`` if the text is not valid base64."""
        try:
            return base64.b64decode(self.base64, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"image is not valid base64: {exc}") from exc


class UsdUsage(_Lenient):
    type: Literal["usd"]
    usd: float


class GenerationsUsage(_Lenient):
    type: Literal["generations"]
    generations: int


Usage = Annotated[UsdUsage | GenerationsUsage, Field(discriminator="type")]


class _Paid(_Lenient):
    usage: Usage | None = None

    @field_validator("usage", mode="wrap")
    @classmethod
    def _unknown_usage_is_none(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # The image is paid for by now; an unfamiliar usage form must not throw it away.
        try:
            return handler(value)
        except ValidationError:
            return None


class GenerateImageResponse(_Paid):
    """The 200 body of the still-image calls (pixflux, bitforge, rotate, inpaint)."""

    image: Base64Image


class GenerateImagesResponse(_Paid):
    """The 200 body of the animations (``/animate-with-text``, ``/animate-with-skeleton``):
    one image per frame."""

    images: Annotated[list[Base64Image], Field(min_length=1)]


class UsdAmount(_Lenient):
    type: Literal["usd"] = "usd"
    usd: float


class BalanceResponse(_Lenient):
    """``GET /balance``: the v2 shape; a v1 body (the bare amount) is lifted into ``credits``."""

    credits: UsdAmount
    subscription: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_v1(cls, data: Any) -> Any:
        if isinstance(data, dict) and "credits" not in data and "usd" in data:
            return {"credits": data}
        return data

    @property
    def usd(self) -> float:
        return self.credits.usd


@dataclass(frozen=True, slots=True)
class GeneratedFrames:
    """Verified PNG frames from one call (one for still images), all the same size."""

    frames: list[bytes] = field(repr=False)
    width: int
    height: int
    usage_usd: float | None = None
    usage_generations: int | None = None

    @classmethod
    def from_response(
        cls, response: GenerateImageResponse | GenerateImagesResponse
    ) -> GeneratedFrames:
        """Decode and verify every frame; raises ``ValueError`` if one is not a sound PNG or
        the frames differ in size."""
        images = (
            response.images if isinstance(response, GenerateImagesResponse) else [response.image]
        )
        frames = [image.decode() for image in images]
        sizes = {png_size(frame) for frame in frames}
        if len(sizes) != 1:
            raise ValueError(f"the frames differ in size: {sorted(sizes)}")
        (width, height), usage = sizes.pop(), response.usage
        return cls(
            frames=frames,
            width=width,
            height=height,
            usage_usd=usage.usd if isinstance(usage, UsdUsage) else None,
            usage_generations=usage.generations if isinstance(usage, GenerationsUsage) else None,
        )


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """A verified PNG from PixelLab and what it cost. The bytes stay out of ``repr``."""

    png: bytes = field(repr=False)
    width: int
    height: int
    usage_usd: float | None = None
    usage_generations: int | None = None


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; raises ``ValueError`` if it is not a PNG.

    The IHDR must directly follow the signature (PNG spec), so 33 bytes are enough; its CRC
    is checked so a truncated or mangled transfer is caught here, not by a browser later.
    """
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE):
        raise ValueError("image is not a PNG (bad signature or truncated)")
    length, chunk_type, width, height = struct.unpack(">I4sII", data[8:24])
    if chunk_type != b"IHDR" or length != 13:
        raise ValueError("image is not a PNG (first chunk is not IHDR)")
    if zlib.crc32(data[12:29]) != struct.unpack(">I", data[29:33])[0]:
        raise ValueError("image is not a PNG (IHDR checksum mismatch)")
    if width == 0 or height == 0:
        raise ValueError("image is not a PNG (zero width or height)")
    return width, height
