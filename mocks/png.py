"""Deterministic pixel-art PNGs for the mock PixelLab, drawn with zlib and struct only.

Each image is a mirror-symmetric little creature on a ``GRID`` x ``GRID`` board (the
identicon / space-invader trick), shaded and outlined, scaled to the requested size. All
choices come from a seed, so the same request always yields the same bytes.
"""

from __future__ import annotations

import colorsys
import random
import struct
import zlib

GRID = 12
_HALF = GRID // 2
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TRANSPARENT = b"\x00\x00\x00\x00"

Rgba = bytes  # four bytes: red, green, blue, alpha


def encode_png(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit RGBA PNG from ``height`` rows of ``width * 4`` bytes each."""
    if len(rows) != height or any(len(row) != width * 4 for row in rows):
        raise ValueError("rows do not match the image size")
    # Filter type 0 (None) before every row: simple, and zlib still squeezes flat areas well.
    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw, 6)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rgba(hue: float, saturation: float, value: float, alpha: int = 255) -> Rgba:
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return bytes((round(red * 255), round(green * 255), round(blue * 255), alpha))


def _creature(rng: random.Random) -> set[tuple[int, int]]:
    """Filled cells of a left-right symmetric shape, denser towards the middle."""
    filled: set[tuple[int, int]] = set()
    for row in range(1, GRID - 1):
        for col in range(1, _HALF):
            centre_pull = col / _HALF  # 0 at the edge, near 1 at the spine
            if rng.random() < 0.25 + 0.55 * centre_pull:
                filled.add((row, col))
                filled.add((row, GRID - 1 - col))
    # A spine keeps the shape in one piece more often than not.
    filled.update((row, col) for row in range(2, GRID - 2) for col in (_HALF - 1, _HALF))
    return filled


def _board(rng: random.Random, transparent: bool) -> list[list[Rgba]]:
    hue = rng.random()
    body = _rgba(hue, 0.55 + 0.3 * rng.random(), 0.85)
    light = _rgba(hue + 0.04, 0.35, 1.0)
    dark = _rgba(hue - 0.04, 0.75, 0.55)
    accent = _rgba(hue + 0.5, 0.8, 0.95)
    outline = _rgba(hue, 0.6, 0.18)
    filled = _creature(rng)
    eye_row = rng.randrange(3, 6)
    eye_col = rng.randrange(2, _HALF - 1)
    eyes = {(eye_row, eye_col), (eye_row, GRID - 1 - eye_col)}
    board: list[list[Rgba]] = []
    for row in range(GRID):
        shade = 0.92 - 0.25 * row / GRID
        background = _TRANSPARENT if transparent else _rgba(hue + 0.5, 0.18, shade)
        line: list[Rgba] = []
        for col in range(GRID):
            if (row, col) in eyes:
                line.append(accent)
            elif (row, col) in filled:
                # Light from the top left: upper cells lighter, lower ones darker.
                line.append(light if row < GRID // 3 else dark if row > 2 * GRID // 3 else body)
            elif any(
                (row + dr, col + dc) in filled for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
            ):
                line.append(outline)
            else:
                line.append(background)
        board.append(line)
    return board


def sprite_png(width: int, height: int, seed: bytes, *, transparent: bool = False) -> bytes:
    """A ``width`` x ``height`` sprite drawn from ``seed``; same seed, same bytes."""
    rng = random.Random(int.from_bytes(seed[:16].ljust(16, b"\x00"), "big"))
    board = _board(rng, transparent)
    columns = [x * GRID // width for x in range(width)]
    # Only GRID distinct rows exist; build each once and reuse it for its pixel rows.
    cell_rows = [b"".join(line[col] for col in columns) for line in board]
    rows = [cell_rows[y * GRID // height] for y in range(height)]
    return encode_png(width, height, rows)
