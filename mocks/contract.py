"""PixelLab's request contract as the mock enforces it, and FastAPI-style error bodies.

Written from docs/pixellab.md on purpose, not imported from ``backend.models``: a mock that
shared our validator would agree with our bugs instead of catching them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

MIN_SIDE, MAX_SIDE, BITFORGE_MAX_SIDE = 16, 400, 200
MIN_AREA = 32 * 32

Outline = Literal[
    "single color black outline", "single color outline", "selective outline", "lineless"
]
Shading = Literal[
    "flat shading", "basic shading", "medium shading", "detailed shading", "highly detailed shading"
]
Detail = Literal["low detail", "medium detail", "highly detailed"]
View = Literal["side", "low top-down", "high top-down"]
Direction = Literal[
    "north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"
]


class ImageSize(BaseModel):
    width: Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)]
    height: Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)]


class Base64Image(BaseModel):
    type: Literal["base64"] = "base64"
    base64: str


class GenerationRequest(BaseModel):
    """The body of ``/generate-image-pixflux`` and ``/generate-image-bitforge``."""

    # FastAPI models on PixelLab's side ignore unknown fields.
    model_config = ConfigDict(extra="ignore")

    description: Annotated[str, Field(min_length=1)]
    image_size: ImageSize
    text_guidance_scale: Annotated[float, Field(ge=1, le=20)] = 8.0
    outline: Outline | None = None
    shading: Shading | None = None
    detail: Detail | None = None
    view: View | None = None
    direction: Direction | None = None
    isometric: bool = False
    no_background: bool = False
    init_image: Base64Image | None = None
    color_image: Base64Image | None = None
    init_image_strength: Annotated[int, Field(ge=1, le=999)] = 300
    seed: int | None = None

    @model_validator(mode="after")
    def _size_within_endpoint_limits(self, info: ValidationInfo) -> GenerationRequest:
        max_side = (info.context or {}).get("max_side", MAX_SIDE)
        width, height = self.image_size.width, self.image_size.height
        if width > max_side or height > max_side:
            raise ValueError(f"image_size must be at most {max_side}x{max_side}")
        if not MIN_AREA <= width * height <= max_side * max_side:
            raise ValueError(
                f"image area must be between 32x32 and {max_side}x{max_side}, got {width}x{height}"
            )
        return self


def validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors in FastAPI's shape: ``loc`` starts with ``"body"``."""
    detail: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    for item in detail:
        item["loc"] = ["body", *item["loc"]]
    return detail


def json_error_detail(exc: ValueError) -> list[dict[str, Any]]:
    """FastAPI's answer to a body that is not JSON (or not UTF-8)."""
    position = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
    reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
    return [
        {
            "type": "json_invalid",
            "loc": ["body", position],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": reason},
        }
    ]


def parse_generation(body: bytes, *, max_side: int) -> GenerationRequest | list[dict[str, Any]]:
    """The validated request, or the ``detail`` list of a 422."""
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        return json_error_detail(exc)
    try:
        return GenerationRequest.model_validate(data, context={"max_side": max_side})
    except ValidationError as exc:
        return validation_detail(exc)
