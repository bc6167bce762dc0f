"""PixelLab's request contract as the mock enforces it, and FastAPI-style error bodies.

Written from docs/pixellab.md on purpose, not imported from ``backend.models``: a mock that
shared our validator would agree with our bugs instead of catching them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

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
    frames: ClassVar[int] = 1

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

    @property
    def text(self) -> str:
        return self.description

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


# ---- the image operations (docs/pixellab.md, "Every operation") ------------------------------


class _ImageOperation(BaseModel):
    """What the mock checks of the image operations: sizes, required images, frame counts."""

    model_config = ConfigDict(extra="ignore")
    frames: ClassVar[int] = 1
    squares: ClassVar[tuple[int, ...]] = ()
    max_side: ClassVar[int] = 200

    image_size: ImageSize
    no_background: bool = False

    @property
    def text(self) -> str:
        """Where the markers are read: the description, else the action, else nothing."""
        return str(getattr(self, "description", "") or getattr(self, "action", "") or "")

    @model_validator(mode="after")
    def _size(self) -> _ImageOperation:
        width, height = self.image_size.width, self.image_size.height
        if self.squares and (width != height or width not in self.squares):
            raise ValueError(f"image_size must be one of {self.squares} (square)")
        if width > self.max_side or height > self.max_side:
            raise ValueError(f"image_size must be at most {self.max_side}x{self.max_side}")
        return self


class RotateBody(_ImageOperation):
    squares: ClassVar[tuple[int, ...]] = (16, 32, 64, 128)
    from_image: Base64Image
    view_change: Annotated[int, Field(ge=-90, le=90)] | None = None
    direction_change: Annotated[int, Field(ge=-180, le=180)] | None = None


class InpaintBody(_ImageOperation):
    description: Annotated[str, Field(min_length=1)]
    inpainting_image: Base64Image
    mask_image: Base64Image
    text_guidance_scale: Annotated[float, Field(ge=1, le=10)] = 3.0


class AnimateTextBody(_ImageOperation):
    frames: ClassVar[int] = 4  # PixelLab draws four frames a call, whatever n_frames says
    squares: ClassVar[tuple[int, ...]] = (64,)
    description: Annotated[str, Field(min_length=1)]
    action: Annotated[str, Field(min_length=1)]
    reference_image: Base64Image
    n_frames: Annotated[int, Field(ge=2, le=20)] = 4
    start_frame_index: Annotated[int, Field(ge=0, le=20)] = 0


class AnimateSkeletonBody(_ImageOperation):
    frames: ClassVar[int] = 3  # the model is a three-frame window
    squares: ClassVar[tuple[int, ...]] = (16, 32, 64, 128, 256)
    max_side: ClassVar[int] = 256
    reference_image: Base64Image
    skeleton_keypoints: Annotated[list[list[dict[str, Any]]], Field(min_length=3, max_length=3)] | (
        None
    ) = None


IMAGE_OPERATIONS: dict[str, type[_ImageOperation]] = {
    "rotate": RotateBody,
    "inpaint": InpaintBody,
    "animate-with-text": AnimateTextBody,
    "animate-with-skeleton": AnimateSkeletonBody,
}


def parse_image_operation(body: bytes, path: str) -> _ImageOperation | list[dict[str, Any]]:
    """The validated body of an image operation, or the ``detail`` list of a 422."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        return json_error_detail(exc)
    try:
        return IMAGE_OPERATIONS[path].model_validate(data)
    except ValidationError as exc:
        return validation_detail(exc)
