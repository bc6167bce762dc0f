"""``/openapi.json`` and ``/docs``: the API document and a reference page to read it.

The page is Swagger UI from the ``swagger-ui-bundle-v2`` wheel, served from the installed
package under ``/docs/assets``: no CDN, so it works on machines without internet.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # no py.typed

from backend.api.openapi import build_document
from backend.config import Settings

ASSETS = "/docs/assets"

# validatorUrl null: Swagger UI would otherwise send the document to an online validator.
# BaseLayout: no top bar, whose URL box invites loading documents from elsewhere.
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
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      displayRequestDuration: true,
    }});
  </script>
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
    return HTMLResponse(PAGE)


routes = [
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", reference, methods=["GET"]),
    Mount(ASSETS, app=StaticFiles(directory=str(swagger_ui_path)), name="docs-assets"),
]
