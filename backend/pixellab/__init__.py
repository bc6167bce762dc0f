"""The PixelLab client: an async httpx client with PixelLab's errors mapped to ours."""

from __future__ import annotations

from backend.pixellab.client import PixelLabClient, create_http_client
from backend.pixellab.schemas import (
    BalanceResponse,
    GeneratedImage,
    GenerateImageResponse,
    png_size,
)

__all__ = [
    "BalanceResponse",
    "GenerateImageResponse",
    "GeneratedImage",
    "PixelLabClient",
    "create_http_client",
    "png_size",
]
