"""The artist page's operations (issue 18): upload a PNG by drag and drop, rotate it, animate
the result by chaining it as an input, and watch the animation's preview."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backend.config import Settings
from fixtures.factories import auth
from mocks.png import sprite_png
from tests.browser.conftest import Tab
from tests.browser.test_pages import SPRITE_LOADED, sign_in

try:
    from playwright.async_api import Locator, Page, expect
except ImportError:  # the dev extra installs it; without it these tests cannot run at all
    if os.environ.get("SPRITEQ_REQUIRE_BROWSER") == "1":
        raise
    pytest.skip("the playwright package is missing", allow_module_level=True)

# A DataTransfer holding one PNG, as a file dragged from the desktop would bring.
DRAGGED_PNG = """(b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], "hero.png", { type: "image/png" }));
  return transfer;
}"""
PREVIEW_LOADED = """(slot) => {
  const image = slot.querySelector("img.drop-preview");
  return Boolean(image && !image.hidden && image.complete && image.naturalWidth > 0);
}"""


async def drop_png(page: Page, zone: Locator, png: bytes) -> None:
    transfer = await page.evaluate_handle(DRAGGED_PNG, base64.b64encode(png).decode())
    for event in ("dragenter", "dragover", "drop"):
        await zone.dispatch_event(event, {"dataTransfer": transfer})


async def test_artist_uploads_rotates_animates_the_result_and_sees_the_preview(
    tab: Tab, make_stack: Callable[..., Any], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_stack(settings)
    page = tab.page
    await sign_in(page, stack.url + "/", tokens["alice"])

    # Rotate: the form shows its image input and only the fields rotate takes.
    await page.select_option("#operation", "rotate")
    await expect(page.locator("#description")).to_be_hidden()
    await expect(page.locator("#size-hint")).to_contain_text("16, 32, 64 or 128")
    slot = page.locator('.image-slot[data-image="from_image"]')
    await drop_png(page, slot.locator(".drop-zone"), sprite_png(64, 64, b"the uploaded hero"))
    await expect(slot).to_have_attribute("data-filled", "base64")
    await page.wait_for_function(PREVIEW_LOADED, arg=await slot.element_handle())
    await page.select_option("#to-direction", "east")
    await page.click("#submit")
    rotated = page.locator("#jobs .job").first
    await expect(rotated).to_have_attribute("data-status", "completed", timeout=15_000)
    await expect(rotated.locator(".tags")).to_contain_text("rotate")
    await page.wait_for_function(SPRITE_LOADED, arg=await rotated.element_handle())
    rotated_id = await rotated.get_attribute("data-job-id")

    # Animate the rotated result: "Use as input" fills the reference image with the job.
    await page.select_option("#operation", "animate_with_text")
    await rotated.locator("button.use-as-input").click()
    reference = page.locator('.image-slot[data-image="reference_image"]')
    await expect(reference).to_have_attribute("data-filled", "job")
    await expect(reference.locator(".drop-caption")).to_contain_text(rotated_id[:8])
    await page.fill("#description", "a knight in armour")
    await page.fill("#action", "walking")
    await page.click("#submit")
    animated = page.locator("#jobs .job").first
    await expect(animated).not_to_have_attribute("data-job-id", rotated_id)
    await expect(animated).to_have_attribute("data-status", "completed", timeout=15_000)
    await expect(animated.locator(".tags")).to_contain_text("4 frames")

    # The preview is the API's animated GIF, one 64 px frame wide, decoded by the browser.
    await page.wait_for_function(SPRITE_LOADED, arg=await animated.element_handle())
    preview = animated.locator("img.sprite.animation")
    assert await preview.evaluate("(image) => image.naturalWidth") == 64
    await tab.screenshot("artist-animation")

    animated_id = await animated.get_attribute("data-job-id")
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        view = (await http.get(f"/v1/jobs/{animated_id}", headers=auth(tokens["alice"]))).json()
    assert view["operation"] == "animate_with_text"
    assert view["result"]["frames"] == 4 and view["result"]["width"] == 4 * 64
