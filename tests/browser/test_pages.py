"""The artist and admin pages in headless Chromium, against a running stack."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backend.config import Settings
from fixtures.factories import auth, sprite_request, wait_for_status
from tests.browser.conftest import Tab

try:
    from playwright.async_api import Page, expect
except ImportError:  # the dev extra installs it; without it these tests cannot run at all
    if os.environ.get("SPRITEQ_REQUIRE_BROWSER") == "1":
        raise
    pytest.skip("the playwright package is missing", allow_module_level=True)

FINAL = {"completed", "failed", "cancelled"}
SPRITE_LOADED = """(card) => {
  const image = card.querySelector("img.sprite");
  return Boolean(image && image.complete && image.naturalWidth > 0);
}"""


async def sign_in(page: Page, url: str, token: str) -> None:
    await page.goto(url)
    await page.fill("#token-input", token)
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#sign-in")).to_be_hidden()


async def submit(page: Page, description: str, **fields: str) -> None:
    await page.fill("#description", description)
    for selector, value in fields.items():
        await page.fill(f"#{selector}", value)
    await page.click("#submit")


def assert_token_only_in_headers(tab: Tab, token: str) -> None:
    api_calls = [r for r in tab.requests if "/v1/" in r.url and "/v1/queue" not in r.url]
    assert api_calls
    for request in tab.requests:
        assert token not in request.url
    for request in api_calls:
        assert request.headers.get("authorization") == f"Bearer {token}", request.url


async def test_artist_watches_a_sprite_progress_to_done_and_downloads_it(
    tab: Tab, make_stack: Callable[..., Any], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_stack(settings)
    page = tab.page
    await sign_in(page, stack.url + "/", tokens["alice"])
    await expect(page.locator("#jobs-empty")).to_be_visible()

    await page.select_option("#view", "side")
    await submit(page, "a green slime with big eyes")
    slime = page.locator("#jobs .job").first
    await expect(slime).to_have_attribute("data-status", "completed")

    await page.select_option("#outline", "single color black outline")
    await submit(page, "a red knight with a lance [mock-latency:1500]")
    knight = page.locator("#jobs .job").first
    await expect(knight.locator(".job-title")).to_contain_text("red knight")
    # While PixelLab works (1.5 s) the job sits at "submitted": 10 %, live over SSE.
    await expect(knight.locator(".progress")).to_have_attribute("aria-valuenow", "10")
    await expect(knight).to_have_attribute("data-status", "active")
    await expect(knight).to_have_attribute("data-transport", "live")
    await expect(knight.locator(".stage")).to_have_text("Generating at PixelLab")
    await tab.screenshot("artist")

    await expect(knight).to_have_attribute("data-status", "completed", timeout=15_000)
    await expect(knight.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    await expect(knight.locator(".percent")).to_have_text("100 %")
    await page.wait_for_function(SPRITE_LOADED, arg=await knight.element_handle())
    sprite = knight.locator("img.sprite")
    assert await sprite.evaluate("(image) => image.naturalWidth") == 64
    assert await sprite.evaluate("(image) => getComputedStyle(image).imageRendering") == "pixelated"
    box = await sprite.bounding_box()
    assert box is not None and box["width"] == 128  # scaled up 2x, whole pixels
    assert (await sprite.get_attribute("src") or "").startswith("blob:")

    async with page.expect_download() as started:
        await knight.locator("a.download").click()
    download = await started.value
    saved = await download.path()
    job_id = await knight.get_attribute("data-job-id")
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        served = await http.get(f"/v1/jobs/{job_id}/result", headers=auth(tokens["alice"]))
    assert saved.read_bytes() == served.content and served.content.startswith(b"\x89PNG")

    assert_token_only_in_headers(tab, tokens["alice"])
    assert tokens["alice"] not in await page.content()


async def test_artist_page_falls_back_to_polling_when_the_stream_fails(
    tab: Tab, make_stack: Callable[..., Any], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_stack(settings)
    page = tab.page
    await page.route("**/v1/jobs/*/events", lambda route: route.abort())
    await sign_in(page, stack.url + "/", tokens["alice"])
    await submit(page, "a tiny bat [mock-latency:300]", width="32", height="32")
    job = page.locator("#jobs .job").first
    await expect(job).to_have_attribute("data-transport", "polling")
    await expect(job).to_have_attribute("data-status", "completed")
    await page.wait_for_function(SPRITE_LOADED, arg=await job.element_handle())
    assert await job.locator("img.sprite").evaluate("(image) => image.naturalWidth") == 32


async def test_artist_sees_field_errors_the_user_cap_and_can_cancel(
    tab: Tab, make_stack: Callable[..., Any], make_settings: Callable[..., Settings],
    tokens: dict[str, str],
) -> None:  # fmt: skip
    # No worker: jobs stay queued, so alice's one slot stays taken.
    stack = make_stack(make_settings(limits={"per_user": 1}), worker=False)
    page = tab.page
    await sign_in(page, stack.url + "/", tokens["alice"])

    await submit(page, "   ", width="500")
    description = page.locator('[data-field="description"] .field-error')
    await expect(description).to_contain_text("at least 1 character")
    size = page.locator('[data-field="image_size"] .field-error')
    await expect(size).to_contain_text("width: Input should be less than or equal to 400")
    await expect(page.locator("#width")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#height")).not_to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#jobs .job")).to_have_count(0)

    await submit(page, "a blue mage", width="64")
    await expect(page.locator('[data-field="image_size"] .field-error')).to_be_empty()
    queued = page.locator("#jobs .job").first
    await expect(queued).to_have_attribute("data-status", "queued")
    # The stream carries the place: its first event already has the position and the ETA.
    await expect(queued).to_have_attribute("data-transport", "live")
    await expect(queued.locator(".queue-info")).to_have_text(re.compile(r"^#1 in queue · about "))

    async with page.expect_response(re.compile(r"/v1/jobs$")) as answered:
        await submit(page, "a green mage")
    response = await answered.value
    assert response.status == 429
    retry_after = int(response.headers["retry-after"])
    alert = page.locator("#form-alert")
    await expect(alert).to_be_visible()
    await expect(alert).to_contain_text("too many jobs in progress")
    await expect(alert).to_contain_text("You already have 1 jobs queued or running")
    shown = re.search(r"Try again in (\d+) s", await alert.inner_text())
    assert shown is not None and 0 < int(shown.group(1)) <= retry_after
    await expect(page.locator("#jobs .job")).to_have_count(1)

    await queued.locator("button.cancel").click()
    await expect(queued).to_have_attribute("data-status", "cancelled")
    await expect(queued.locator("button.cancel")).to_be_hidden()
    await page.click("#submit")  # the slot is free again
    await expect(page.locator("#jobs .job")).to_have_count(2)
    await expect(alert).to_be_hidden()


async def test_admin_sees_the_queue_and_retries_and_deletes_dead_letters(
    tab: Tab, make_stack: Callable[..., Any], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_stack(settings, worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:

        async def dead_letter(token: str, description: str) -> str:
            sent = await http.post(
                "/v1/jobs", json=sprite_request(description), headers=auth(token)
            )
            assert sent.status_code == 202, sent.text
            job_id = str(sent.json()["job_id"])
            assert (await wait_for_status(http, job_id, token, FINAL))["status"] == "failed"
            return job_id

        stack.start_worker()
        # PixelLab rejects the fox once: dead-lettered, and a retry will succeed.
        fox = await dead_letter(tokens["alice"], "a fox archer [mock-fail:422*1]")
        await dead_letter(tokens["bob"], "a stone golem [mock:server_error]")
        golem = await dead_letter(tokens["bob"], "a haunted lamp [mock:failure]")

        page = tab.page
        await sign_in(page, stack.url + "/admin", tokens["admin"])
        await expect(page.locator("#queue-state")).to_have_text("OK")
        await expect(page.locator("#queue-state")).to_have_attribute("data-state", "ok")
        await expect(page.locator("#stat-capacity")).to_have_text("500")
        await expect(page.locator("#stat-workers")).to_have_text("1")
        rows = page.locator("#dlq-rows tr")
        await expect(rows).to_have_count(3)
        fox_row = page.locator(f'#dlq-rows tr[data-job-id="{fox}"]')
        await expect(fox_row.locator(".user")).to_have_text("alice")
        await expect(fox_row.locator(".error-type")).to_have_text("invalid_request")
        await expect(fox_row.locator(".attempts")).to_have_text("1")
        await tab.screenshot("admin")

        await fox_row.locator("button.retry").click()
        await expect(fox_row).to_have_count(0)
        await expect(rows).to_have_count(2)
        done = await wait_for_status(http, fox, tokens["alice"], FINAL)
        assert done["status"] == "completed"
        async with page.expect_response(re.compile(r"/v1/admin/dlq\?limit=")) as refreshed:
            await page.click("#refresh")
        assert fox not in [e["job_id"] for e in (await (await refreshed.value).json())["items"]]
        await expect(rows).to_have_count(2)
        await expect(fox_row).to_have_count(0)

        golem_row = page.locator(f'#dlq-rows tr[data-job-id="{golem}"]')
        delete = golem_row.locator("button.delete")
        await delete.click()
        await expect(delete).to_have_text("Confirm delete")
        await delete.click()
        await expect(golem_row).to_have_count(0)
        gone = await http.get(f"/v1/admin/dlq/{golem}", headers=auth(tokens["admin"]))
        assert gone.status_code == 404
        assert_token_only_in_headers(tab, tokens["admin"])


async def test_admin_queue_state_turns_warning_then_critical(
    tab: Tab, make_stack: Callable[..., Any], make_settings: Callable[..., Settings],
    tokens: dict[str, str],
) -> None:  # fmt: skip
    stack = make_stack(make_settings(limits={"queue_capacity": 2, "warning_at": 1}), worker=False)
    page = tab.page
    await sign_in(page, stack.url + "/admin", tokens["admin"])
    state = page.locator("#queue-state")
    await expect(state).to_have_attribute("data-state", "ok")
    await expect(page.locator("#dlq-empty")).to_be_visible()
    colours = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for wanted, description in (("warning", "a crab"), ("critical", "a gull")):
            sent = await http.post(
                "/v1/jobs", json=sprite_request(description), headers=auth(tokens["bob"])
            )
            assert sent.status_code == 202, sent.text
            await page.click("#refresh")
            await expect(state).to_have_attribute("data-state", wanted)
            colours.append(await state.evaluate("(badge) => getComputedStyle(badge).color"))
    await expect(state).to_have_text("Critical")
    await expect(page.locator("#stat-waiting")).to_have_text("2")
    await expect(page.locator("#meter-used")).to_contain_text("2 of 2 queued or running")
    assert colours[0] != colours[1]


async def test_variants_show_as_a_grid(
    tab: Tab, make_stack: Callable[..., Any], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_stack(settings)
    page = tab.page
    await sign_in(page, stack.url + "/", tokens["alice"])
    await page.click("#advanced summary")
    await page.select_option("#variants", "3")
    await submit(page, "a trio of toads")
    grid = page.locator("#jobs .group .group-grid")
    await expect(grid.locator(".job")).to_have_count(3)
    for index in range(3):
        await expect(grid.locator(".job").nth(index)).to_have_attribute("data-status", "completed")
    await page.click("#refresh-jobs")  # the list from the server keeps the group together
    await expect(page.locator("#jobs .group")).to_have_count(1)
    await expect(grid.locator(".job")).to_have_count(3)
