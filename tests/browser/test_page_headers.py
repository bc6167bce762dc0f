"""The pages' HTTP side: served from the package, with a strict Content-Security-Policy."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from backend.config import Settings


async def test_pages_are_served_with_a_strict_content_security_policy(
    make_stack: Callable[..., Any], settings: Settings
) -> None:
    stack = make_stack(settings, worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for path in ("/", "/admin"):
            page = await http.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "style-src 'self'" in policy
            assert "default-src 'none'" in policy and "unsafe" not in policy
            # No inline script, no inline style: every <script> has a src, no style= attributes.
            assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", page.text) == []
            assert "<style" not in page.text and " style=" not in page.text
        script = await http.get("/static/artist.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        # The pages' own files under /static carry the same policy as / and /admin.
        raw_page = await http.get("/static/admin.html")
        assert raw_page.headers["content-security-policy"] == policy
        assert (await http.get("/static/style.css")).headers["content-type"].startswith("text/css")
        assert (await http.get("/static/missing.js")).status_code == 404


async def test_docs_has_the_pages_security_headers(
    make_stack: Callable[..., Any], settings: Settings
) -> None:
    stack = make_stack(settings, worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/static/docs.js"):
            answer = await http.get(path)
            assert answer.status_code == 200, path
            policy = answer.headers["content-security-policy"]
            assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
            assert "script-src 'self'" in policy and "unsafe-eval" not in policy
            assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
        page = (await http.get("/docs")).text
        assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", page) == [], "no inline script"


async def test_docs_renders_under_its_policy(
    tab: Any, make_stack: Callable[..., Any], settings: Settings
) -> None:
    """Swagger UI starts and shows the operations with no CSP violation (a console error)."""
    stack = make_stack(settings, worker=False)
    await tab.page.goto(stack.url + "/docs")
    await tab.page.get_by_text("/v1/jobs/{job_id}/result").first.wait_for()
    await tab.page.locator(".opblock-summary").first.click()
    await tab.page.wait_for_timeout(300)
