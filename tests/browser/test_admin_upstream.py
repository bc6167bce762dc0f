"""The admin page: PixelLab's state with its Resume button and its balance, and the bulk DLQ
retry."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backend.config import Settings
from backend.errors import ErrorType
from backend.queue.resources import open_resources
from fixtures.factories import auth, wait_until
from tests.browser.conftest import Tab
from tests.browser.test_pages import sign_in
from tests.integration.test_dlq_scale import dead_letter

try:
    from playwright.async_api import Route, expect
except ImportError:  # the dev extra installs it; without it these tests cannot run at all
    if os.environ.get("SPRITEQ_REQUIRE_BROWSER") == "1":
        raise
    pytest.skip("the playwright package is missing", allow_module_level=True)


async def test_admin_sees_pixellab_paused_and_resumes_it(
    tab: Tab, make_stack: Callable[..., Any], settings: Settings, tokens: dict[str, str]
) -> None:
    stack = make_stack(settings, worker=False)
    page = tab.page

    # A server without the field (older than the upstream state): nothing is shown.
    async def without_upstream(route: Route) -> None:
        answer = await route.fetch()
        body = {k: v for k, v in (await answer.json()).items() if k != "upstream"}
        await route.fulfill(response=answer, body=json.dumps(body))

    await page.route("**/v1/queue", without_upstream)
    await sign_in(page, stack.url + "/admin", tokens["admin"])
    await expect(page.locator("#queue-state")).to_have_text("OK")
    await expect(page.locator("#upstream")).to_be_hidden()
    await page.unroute("**/v1/queue", without_upstream)

    # PixelLab refused for credit: a worker paused calls (here, the same state set directly).
    resources = await open_resources(settings)
    try:
        await resources.upstream.pause(ErrorType.INSUFFICIENT_CREDITS.value)
    finally:
        await resources.close()
    await page.click("#refresh")
    badge = page.locator("#upstream-state")
    await expect(page.locator("#upstream")).to_be_visible()
    await expect(badge).to_have_text("Paused")
    await expect(badge).to_have_attribute("data-state", "critical")
    await expect(page.locator("#upstream-reason")).to_contain_text("insufficient_credits")
    await tab.screenshot("admin-upstream-paused")

    await page.click("#upstream-resume")  # the real POST /v1/admin/upstream/resume
    await expect(badge).to_have_text("OK")
    await expect(page.locator("#upstream-resume")).to_be_hidden()
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        assert (await http.get("/v1/queue")).json()["upstream"]["state"] == "ok"


async def test_admin_retries_every_dead_letter_of_a_type(
    tab: Tab, make_stack: Callable[..., Any], settings: Settings, tokens: dict[str, str]
) -> None:
    opened = await open_resources(settings)
    try:
        servers = [await dead_letter(opened, n, ErrorType.SERVER_ERROR, dlq_max=100)
                   for n in range(2)]  # fmt: skip
        kept = await dead_letter(opened, 7, ErrorType.TIMEOUT, dlq_max=100)
    finally:
        await opened.close()
    stack = make_stack(settings, worker=False)
    page = tab.page
    await sign_in(page, stack.url + "/admin", tokens["admin"])
    rows = page.locator("#dlq-rows tr")
    await expect(rows).to_have_count(3)

    await page.select_option("#bulk-type", "server_error")
    await page.click("#bulk-submit")
    await expect(page.locator("#toast")).to_contain_text("2 server_error jobs requeued")
    await expect(rows).to_have_count(1)
    await expect(page.locator(f'#dlq-rows tr[data-job-id="{kept}"]')).to_have_count(1)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for job_id in servers:
            job = await http.get(f"/v1/jobs/{job_id}", headers=auth(tokens["admin"]))
            assert job.json()["status"] == "queued"


async def test_admin_sees_the_pixellab_balance_with_its_age(
    tab: Tab, make_stack: Callable[..., Any], make_settings: Callable[..., Settings],
    tokens: dict[str, str],
) -> None:  # fmt: skip
    stack = make_stack(make_settings(pixellab={"balance_interval_s": 0.3}))
    page = tab.page
    await sign_in(page, stack.url + "/admin", tokens["admin"])
    balance = page.locator("#upstream-balance")
    await expect(balance).to_be_visible()
    # The page refreshes every 5 s; once a worker has read the balance, a click asks at once.
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:

        async def read() -> bool:
            view = await http.get("/v1/admin/upstream", headers=auth(tokens["admin"]))
            return view.json()["balance"] is not None

        await wait_until(read, 10, "a worker to record the balance")
    await page.click("#refresh")
    await expect(balance).to_have_attribute("data-known", "true", timeout=10_000)
    await expect(balance).to_contain_text(re.compile(r"\$\d+\.\d\d credit · checked "))
