"""Inputs that once made the service answer 5xx, pinned so they stay 4xx.

Each names the input and what it used to do.
"""

from __future__ import annotations

import httpx
import pytest

from fixtures.factories import auth


async def test_deeply_nested_json_is_bad_json_not_a_crash(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    # json.loads raised RecursionError, which read_json did not catch: a 500.
    headers = {**auth(tokens["alice"]), "Content-Type": "application/json"}
    response = await client.post("/v1/jobs", content=b"[" * 60_000, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_json"


# '²'.isdigit() is True but int('²') raised ValueError: a 500.
@pytest.mark.parametrize(("path", "who"), [("/v1/jobs", "alice"), ("/v1/admin/dlq", "admin")])
async def test_a_non_ascii_digit_limit_is_a_422(
    client: httpx.AsyncClient, tokens: dict[str, str], path: str, who: str
) -> None:
    response = await client.get(path, params={"limit": "²"}, headers=auth(tokens[who]))
    assert response.status_code == 422


# A '²' cursor reached Redis, whose ResponseError the edge answered as 503 unavailable.
async def test_a_non_ascii_digit_cursor_reads_from_the_start(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    response = await client.get("/v1/admin/dlq", params={"cursor": "²"},
                                headers=auth(tokens["admin"]))  # fmt: skip
    assert response.status_code == 200
