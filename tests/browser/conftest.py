"""Browser fixtures: Debian's headless Chromium driven by Playwright, one browser per session.

Playwright's own browser download does not work on these machines, so the tests launch the
system ``chromium`` (``SPRITEQ_CHROMIUM`` points elsewhere). Where it or the ``playwright``
package is missing the browser tests skip; with ``SPRITEQ_REQUIRE_BROWSER=1`` (CI) they fail.
The async API runs on the suite's session event loop, next to the stack's own threads.
Screenshots go to the ignored ``.artifacts/screenshots/``, so a test run leaves the work tree
clean; ``scripts/screenshots.sh`` points ``SPRITEQ_SCREENSHOTS_DIR`` at ``docs/screenshots/``
to refresh the ones the docs show.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Page, Request

CHROMIUM = Path(os.environ.get("SPRITEQ_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SPRITEQ_SCREENSHOTS_DIR") or ROOT / ".artifacts" / "screenshots")
VIEWPORT = {"width": 1280, "height": 860}
# Chrome logs every non-2xx fetch as a console error; the 401/404/422/429 answers the pages
# handle on purpose are not faults.
_EXPECTED_CONSOLE = ("Failed to load resource",)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("SPRITEQ_REQUIRE_BROWSER") == "1":
        pytest.fail(f"headless Chromium required (SPRITEQ_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(f"browser tests need headless Chromium: {reason}")


def _chromium() -> str:
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    return str(CHROMIUM)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("the playwright package is missing (pip install -e '.[dev]')")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


def _screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


@dataclass
class Tab:
    """A page in a fresh browser context, with what it logged and every request it made."""

    page: Page
    problems: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith(_EXPECTED_CONSOLE):
            self.problems.append(message.text)

    def on_request(self, request: Request) -> None:
        self.requests.append(request)

    def on_page_error(self, error: Exception) -> None:
        self.problems.append(f"uncaught: {error}")

    async def screenshot(self, name: str) -> Path:
        path = _screenshot_path(name)
        await self.page.screenshot(path=str(path), animations="disabled")
        return path


@pytest.fixture
async def tab(browser: Browser, make_stack: Callable[..., Any]) -> AsyncIterator[Tab]:
    """A new context per test: its own sessionStorage, so no token leaks between tests.

    Console errors (a CSP violation, an exception in the page's script) fail the test. It
    asks for ``make_stack`` only to be closed before any stack stops: a page still holding
    an event stream would make the server wait out its graceful-shutdown period.
    """
    context = await browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    opened = Tab(page)
    page.on("console", opened.on_console)
    page.on("pageerror", opened.on_page_error)
    page.on("request", opened.on_request)
    try:
        yield opened
    finally:
        await context.close()
    assert not opened.problems, f"the page logged errors: {opened.problems}"
