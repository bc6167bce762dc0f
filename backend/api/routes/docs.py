"""``/openapi.json`` and ``/docs``: the API document and a reference page to read it.

The page is Swagger UI from the ``swagger-ui-bundle-v2`` wheel, served from the installed
package under ``/docs/assets``: no CDN, so it works on machines without internet. It has the
other pages' headers (``backend.api.routes.pages``); its CSP differs only in allowing
``data:`` images (the icons in Swagger UI's stylesheet). Its start-up script is
``/static/docs.js``, not inline, so scripts and styles come from this origin only.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # no py.typed

from backend.api.openapi import build_document
from backend.api.routes.pages import PAGE_HEADERS, HeaderedStaticFiles
from backend.config import Settings

ASSETS = "/docs/assets"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
DOCS_HEADERS = {**PAGE_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>spritequeue API reference</title>
  <link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS}/swagger-ui-bundle.js"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""


def _document(request: Request) -> bytes:
    # Built once per app, on first use: it depends only on code and settings.
    state = request.app.state
    cached: bytes | None = getattr(state, "openapi_document", None)
    if cached is None:
        settings: Settings = state.resources.settings
        cached = json.dumps(build_document(settings), separators=(",", ":")).encode()
        state.openapi_document = cached
    return cached


async def openapi(request: Request) -> Response:
    return Response(_document(request), media_type="application/json")


async def reference(request: Request) -> Response:
    return HTMLResponse(PAGE, headers=DOCS_HEADERS)


routes = [
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", reference, methods=["GET"]),
    Mount(
        ASSETS,
        app=HeaderedStaticFiles(directory=str(swagger_ui_path), headers=DOCS_HEADERS),
        name="docs-assets",
    ),
]
