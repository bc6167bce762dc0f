"""PNG work with Pillow: checking an input image, sprite sheets, single frames, GIF previews.

A multi-frame result is kept as one horizontal sprite sheet PNG (frames left to right, all
the same size), so the cache holds one compact entry per job; frames and GIFs are cut from
it when asked for. Pure functions on bytes, no I/O.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# A decompression bomb guard well above any PixelLab size (400 x 400, 20 frames of 256).
Image.MAX_IMAGE_PIXELS = 4096 * 4096
GIF_FRAME_MS = 100


class NotAPng(ValueError):
    """The bytes are not a sound PNG image."""


@dataclass(frozen=True, slots=True)
class PngInfo:
    width: int
    height: int


def png_info(data: bytes) -> PngInfo:
    """Width and height of a PNG, checked to decode; raises ``NotAPng``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise NotAPng(f"the image is {image.format or 'unknown'}, not a PNG")
            image.verify()  # chunk CRCs and structure
            return PngInfo(*image.size)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise NotAPng("the image is not a readable PNG") from exc


def _open(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def _encode_png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def sheet(frames: list[bytes]) -> tuple[bytes, int, int]:
    """One horizontal sheet of equally sized frames: ``(png, frame_width, frame_height)``.

    A single frame is returned as it came. Raises ``NotAPng`` when a frame does not decode
    or the frames differ in size.
    """
    if not frames:
        raise NotAPng("no frames")
    if len(frames) == 1:
        info = png_info(frames[0])
        return frames[0], info.width, info.height
    try:
        images = [_open(frame).convert("RGBA") for frame in frames]
    except (UnidentifiedImageError, OSError) as exc:
        raise NotAPng("a frame is not a readable PNG") from exc
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise NotAPng("the frames differ in size")
    board = Image.new("RGBA", (width * len(images), height))
    for index, image in enumerate(images):
        board.paste(image, (index * width, 0))
    return _encode_png(board), width, height


def frame(sheet_png: bytes, index: int, frames: int) -> bytes:
    """Frame ``index`` (from 0) of a sheet of ``frames`` as its own PNG."""
    if frames == 1:
        return sheet_png
    image = _open(sheet_png)
    width = image.width // frames
    return _encode_png(image.crop((index * width, 0, (index + 1) * width, image.height)))


def gif(sheet_png: bytes, frames: int, *, frame_ms: int = GIF_FRAME_MS) -> bytes:
    """An endlessly looping animated GIF of the sheet's frames (transparency kept)."""
    image = _open(sheet_png).convert("RGBA")
    width = image.width // frames
    parts = [image.crop((i * width, 0, (i + 1) * width, image.height)) for i in range(frames)]
    out = io.BytesIO()
    parts[0].save(
        out, format="GIF", save_all=True, append_images=parts[1:], duration=frame_ms,
        loop=0, disposal=2, optimize=False,
    )  # fmt: skip
    return out.getvalue()


def gif_frame_count(data: bytes) -> int:
    """How many frames a GIF holds (for tests and checks)."""
    with Image.open(io.BytesIO(data)) as image:
        return int(getattr(image, "n_frames", 1))
