"""Every PixelLab generation as a job: one request model per ``operation``, with PixelLab's limits.

Limits come from PixelLab's v1 OpenAPI document (docs/pixellab.md has them as a table;
tests/contract/pixellab_limits.json holds our extract, and the contract tests hold these
models to it). A request PixelLab would refuse is a 422 here, naming the field.

Rules PixelLab states only in prose, or not at all, are ours (docs/api.md):
- sizes: rotate takes squares of 16, 32, 64 or 128; animate_with_skeleton squares up to 256;
  animate_with_text 64x64 only; bitforge and inpaint sides up to 200;
- every input image has the job's ``image_size``, except ``color_image`` (a palette) and
  ``style_image`` (any size up to 400x400), checked by ``image_problems``;
- frame lists hold at most as many images as the model draws (4 for text, 3 for skeleton).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from backend.inputs import Base64Image, ImageInput
from backend.models import (
    MIN_AREA,
    MIN_SIDE,
    Detail,
    Direction,
    GenerationRequest,
    Outline,
    Seed,
    Shading,
    SpriteRequest,
    Strength,
    Strict,
    View,
)

Operation = Literal[
    "pixflux", "bitforge", "rotate", "animate_with_text", "animate_with_skeleton", "inpaint"
]
OPERATIONS: tuple[str, ...] = Operation.__args__  # type: ignore[attr-defined]
FREE_SIZE_IMAGES = frozenset({"color_image", "style_image"})
FREE_MAX_SIDE = 400
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Guidance = Annotated[float, Field(ge=1, le=20)]


class _Size(BaseModel):
    """An ``image_size`` with per-endpoint sides; subclasses set the allowed squares."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    squares: ClassVar[tuple[int, ...]] = ()
    min_area: ClassVar[int] = 0

    @model_validator(mode="after")
    def _allowed(self) -> _Size:
        width, height = getattr(self, "width"), getattr(self, "height")  # noqa: B009
        if self.squares and (width != height or width not in self.squares):
            sizes = ", ".join(f"{side}x{side}" for side in self.squares)
            raise ValueError(f"image size must be one of {sizes}")
        if width * height < self.min_area:
            raise ValueError(f"image area {width * height} px must be at least 32x32")
        return self


class BitforgeSize(_Size):
    min_area: ClassVar[int] = MIN_AREA
    width: int = Field(ge=MIN_SIDE, le=200, strict=True)
    height: int = Field(ge=MIN_SIDE, le=200, strict=True)


class InpaintSize(_Size):
    width: int = Field(ge=MIN_SIDE, le=200, strict=True)
    height: int = Field(ge=MIN_SIDE, le=200, strict=True)


class RotateSize(_Size):
    squares: ClassVar[tuple[int, ...]] = (16, 32, 64, 128)
    width: int = Field(ge=16, le=128, strict=True)
    height: int = Field(ge=16, le=128, strict=True)


class SkeletonSize(_Size):
    squares: ClassVar[tuple[int, ...]] = (16, 32, 64, 128, 256)
    width: int = Field(ge=16, le=256, strict=True)
    height: int = Field(ge=16, le=256, strict=True)


class AnimateTextSize(_Size):
    width: int = Field(ge=64, le=64, strict=True)
    height: int = Field(ge=64, le=64, strict=True)


SkeletonLabel = Literal[
    "NOSE", "NECK", "RIGHT SHOULDER", "RIGHT ELBOW", "RIGHT ARM", "LEFT SHOULDER", "LEFT ELBOW",
    "LEFT ARM", "RIGHT HIP", "RIGHT KNEE", "RIGHT LEG", "LEFT HIP", "LEFT KNEE", "LEFT LEG",
    "RIGHT EYE", "LEFT EYE", "RIGHT EAR", "LEFT EAR",
]  # fmt: skip


class Point(BaseModel):
    """One skeleton keypoint, in pixels of the image."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    x: Annotated[float, Field(allow_inf_nan=False)]
    y: Annotated[float, Field(allow_inf_nan=False)]
    label: SkeletonLabel
    z_index: Annotated[int, Field(strict=True)] = 0


Points = Annotated[list[Point], Field(max_length=64)]


Frames4 = Annotated[list[ImageInput | None], Field(max_length=4)]
Frames3 = Annotated[list[ImageInput | None], Field(max_length=3)]


class _Styled(GenerationRequest):
    """The style fields bitforge and inpaint share with pixflux, plus oblique projection."""

    outline: Outline | None = None
    shading: Shading | None = None
    detail: Detail | None = None
    view: View | None = None
    direction: Direction | None = None
    isometric: Strict = False
    oblique_projection: Strict = False
    no_background: Strict = False
    init_image: ImageInput | None = None
    init_image_strength: Strength = 300
    color_image: ImageInput | None = None
    seed: Seed | None = None


class BitforgeRequest(_Styled):
    """``operation: bitforge``: an image in the style of ``style_image``; sides up to 200."""

    operation: Literal["bitforge"]
    description: Text
    image_size: BitforgeSize
    text_guidance_scale: Guidance = 8.0
    style_strength: Annotated[int, Field(ge=0, le=100, strict=True)] = 0
    coverage_percentage: Annotated[float, Field(ge=0, le=100)] | None = None
    style_image: ImageInput | None = None
    inpainting_image: ImageInput | None = None
    mask_image: ImageInput | None = None
    skeleton_guidance_scale: Annotated[float, Field(ge=0, le=5)] = 1.0
    skeleton_keypoints: Points | None = None


class RotateRequest(GenerationRequest):
    """``operation: rotate``: ``from_image`` turned to another direction or view."""

    operation: Literal["rotate"]
    image_size: RotateSize
    from_image: ImageInput
    image_guidance_scale: Guidance = 3.0
    view_change: Annotated[int, Field(ge=-90, le=90, strict=True)] | None = None
    direction_change: Annotated[int, Field(ge=-180, le=180, strict=True)] | None = None
    from_view: View | None = None
    to_view: View | None = None
    from_direction: Direction | None = None
    to_direction: Direction | None = None
    isometric: Strict = False
    oblique_projection: Strict = False
    init_image: ImageInput | None = None
    init_image_strength: Strength = 300
    mask_image: ImageInput | None = None
    color_image: ImageInput | None = None
    seed: Seed | None = None

    @model_validator(mode="after")
    def _mask_needs_init(self) -> RotateRequest:
        if self.mask_image is not None and self.init_image is None:
            raise ValueError("mask_image requires init_image")
        return self


class AnimateWithTextRequest(GenerationRequest):
    """``operation: animate_with_text``: frames of ``action`` for the character in
    ``reference_image``; 64x64 only. PixelLab draws 4 frames a call."""

    operation: Literal["animate_with_text"]
    image_size: AnimateTextSize
    description: Text
    action: Annotated[str, Field(min_length=1, max_length=500)]
    reference_image: ImageInput
    text_guidance_scale: Guidance = 8.0
    image_guidance_scale: Guidance = 1.4
    n_frames: Annotated[int, Field(ge=2, le=20, strict=True)] = 4
    start_frame_index: Annotated[int, Field(ge=0, le=20, strict=True)] = 0
    view: View | None = None
    direction: Direction | None = None
    init_images: Frames4 | None = None
    init_image_strength: Strength = 300
    inpainting_images: Frames4 | None = None
    mask_images: Frames4 | None = None
    color_image: ImageInput | None = None
    seed: Seed | None = None


class AnimateWithSkeletonRequest(GenerationRequest):
    """``operation: animate_with_skeleton``: 3 frames following ``skeleton_keypoints``."""

    operation: Literal["animate_with_skeleton"]
    image_size: SkeletonSize
    reference_image: ImageInput
    guidance_scale: Guidance = 4.0
    view: View | None = None
    direction: Direction | None = None
    isometric: Strict = False
    oblique_projection: Strict = False
    init_images: Frames3 | None = None
    init_image_strength: Strength = 300
    skeleton_keypoints: Annotated[list[Points], Field(min_length=3, max_length=3)] | None = None
    inpainting_images: Frames3 | None = None
    mask_images: Frames3 | None = None
    color_image: ImageInput | None = None
    seed: Seed | None = None


class InpaintRequest(_Styled):
    """``operation: inpaint``: redraw the white part of ``mask_image`` in ``inpainting_image``."""

    operation: Literal["inpaint"]
    description: Text
    image_size: InpaintSize
    inpainting_image: ImageInput
    mask_image: ImageInput
    text_guidance_scale: Annotated[float, Field(ge=1, le=10)] = 3.0


JobRequest = (
    SpriteRequest
    | BitforgeRequest
    | RotateRequest
    | AnimateWithTextRequest
    | AnimateWithSkeletonRequest
    | InpaintRequest
)
MODELS: dict[str, type[GenerationRequest]] = {
    "pixflux": SpriteRequest,
    "bitforge": BitforgeRequest,
    "rotate": RotateRequest,
    "animate_with_text": AnimateWithTextRequest,
    "animate_with_skeleton": AnimateWithSkeletonRequest,
    "inpaint": InpaintRequest,
}
# PixelLab's path for each operation.
ENDPOINTS = {
    "pixflux": "/generate-image-pixflux",
    "bitforge": "/generate-image-bitforge",
    "rotate": "/rotate",
    "animate_with_text": "/animate-with-text",
    "animate_with_skeleton": "/animate-with-skeleton",
    "inpaint": "/inpaint",
}


def model_for(data: Any) -> type[GenerationRequest]:
    """The model for a body's ``operation`` (pixflux when absent); raises ``ValidationError``
    naming ``operation`` when it is not one of ours."""
    name = data.get("operation", "pixflux") if isinstance(data, dict) else "pixflux"
    if isinstance(name, str) and name in MODELS:
        return MODELS[name]
    known = ", ".join(OPERATIONS)
    raise ValidationError.from_exception_data(
        "JobRequest",
        [{"type": "literal_error", "loc": ("operation",), "input": name,
          "ctx": {"expected": known}}],
    )  # fmt: skip


def parse(data: Any) -> GenerationRequest:
    """The validated request of any operation; raises ``ValidationError`` with field paths
    relative to the body (the operation's tag is not in them)."""
    return model_for(data).model_validate(data)


def image_items(request: BaseModel) -> Iterator[tuple[str, Any]]:
    """``(field path, input)`` of every image the request carries (``init_images.2``)."""
    for name in type(request).model_fields:
        value = getattr(request, name)
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel) and hasattr(item, "type"):
                    yield f"{name}.{index}", item
        elif isinstance(value, BaseModel) and name != "image_size" and hasattr(value, "type"):
            yield name, value


def image_problems(request: BaseModel) -> list[dict[str, str]]:
    """``[{field, reason}]`` for decoded inputs of the wrong size (see the module's rules)."""
    size = getattr(request, "image_size", None)
    problems = []
    for path, item in image_items(request):
        if not isinstance(item, Base64Image) or size is None:
            continue
        width, height = item.size
        if path.split(".")[0] in FREE_SIZE_IMAGES:
            if max(width, height) > FREE_MAX_SIDE:
                reason = f"the image is {width}x{height}; at most {FREE_MAX_SIDE} a side"
                problems.append({"field": path, "reason": reason})
        elif (width, height) != (size.width, size.height):
            reason = f"the image is {width}x{height} but image_size is {size.width}x{size.height}"
            problems.append({"field": path, "reason": reason})
    return problems
