"""The web pages: ``/`` for artists, ``/admin`` for admins, their assets under ``/static``.

The pages are static files; everything user-specific is fetched by their scripts with the
token from ``sessionStorage`` in the ``Authorization`` header, so no page ever contains a
secret and no token ever appears in a URL. The Content-Security-Policy allows scripts and
styles from this origin only (no inline script, no ``eval``), blob images for the sprites
the scripts fetch, and no form submission by the browser at all: the scripts handle submit,
so a page whose script failed to load cannot post a token anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class HeaderedStaticFiles(StaticFiles):
    """Static files with the pages' headers: ``/static/artist.html`` must not dodge the CSP."""

    def __init__(self, *, directory: PathLike, headers: dict[str, str] = PAGE_HEADERS) -> None:
        super().__init__(directory=directory)
        self._headers = headers

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(self._headers)
        return response


def _page(name: str) -> Response:
    return FileResponse(STATIC_DIR / name, media_type="text/html", headers=PAGE_HEADERS)


async def artist(request: Request) -> Response:
    return _page("artist.html")


async def admin(request: Request) -> Response:
    return _page("admin.html")


routes = [
    Route("/", artist, methods=["GET"]),
    Route("/admin", admin, methods=["GET"]),
    Mount("/static", app=HeaderedStaticFiles(directory=STATIC_DIR), name="static"),
]
