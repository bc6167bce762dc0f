"""The job path over real HTTP: submit -> queue -> worker -> mock PixelLab -> result."""

from __future__ import annotations

import json
import struct

import httpx
import pytest
import redis.asyncio as aioredis
from arq.constants import job_key_prefix

from backend.store import keys
from fixtures.factories import auth, sprite_request, wait_for_status


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_submit_completes_and_serves_png_of_requested_size(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    body = sprite_request("a blue slime", image_size={"width": 96, "height": 48})
    response = await client.post("/v1/jobs", json=body, headers=auth(tokens["alice"]))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["position"] >= 1
    assert response.headers["x-request-id"]

    done = await wait_for_status(client, job["job_id"], tokens["alice"], {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["progress"] == 100 and done["attempts"] == 1
    assert done["result"]["width"] == 96 and done["result"]["height"] == 48

    image = await client.get(done["result"]["url"], headers=auth(tokens["alice"]))
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert png_size(image.content) == (96, 48)


async def test_repeat_after_completion_is_a_cache_hit_with_a_working_job(
    client: httpx.AsyncClient, tokens: dict[str, str], mock_pixellab: object
) -> None:
    body = sprite_request("a green goblin")
    first = (await client.post("/v1/jobs", json=body, headers=auth(tokens["alice"]))).json()
    await wait_for_status(client, first["job_id"], tokens["alice"], {"completed"})

    again = await client.post("/v1/jobs", json=body, headers=auth(tokens["bob"]))
    assert again.status_code == 200
    hit = again.json()
    assert hit["cached"] is True and hit["status"] == "completed"
    assert hit["job_id"] != first["job_id"]
    polled = await client.get(f"/v1/jobs/{hit['job_id']}", headers=auth(tokens["bob"]))
    assert polled.json()["status"] == "completed"
    image = await client.get(hit["result"]["url"], headers=auth(tokens["bob"]))
    assert image.status_code == 200 and png_size(image.content) == (64, 64)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"description": ""}, "description"),
        ({"description": "x" * 2001}, "description"),
        ({"description": 42}, "description"),
        ({"image_size": {"width": 15, "height": 64}}, "image_size.width"),
        ({"image_size": {"width": 64, "height": 401}}, "image_size.height"),
        ({"image_size": {"width": 16, "height": 16}}, "image_size"),
        ({"image_size": {"width": 64}}, "image_size.height"),
        ({"image_size": {"width": 64.5, "height": 64}}, "image_size.width"),
        ({"outline": "thick"}, "outline"),
        ({"shading": "none"}, "shading"),
        ({"detail": "max"}, "detail"),
        ({"view": "top"}, "view"),
        ({"direction": "up"}, "direction"),
        ({"isometric": "yes"}, "isometric"),
        ({"no_background": 1}, "no_background"),
        ({"text_guidance_scale": 0.5}, "text_guidance_scale"),
        ({"text_guidance_scale": 21}, "text_guidance_scale"),
        ({"seed": -1}, "seed"),
        ({"seed": "abc"}, "seed"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 601}, "timeout_s"),
        ({"negative_description": "ugly"}, "negative_description"),
    ],
)
async def test_invalid_field_is_422_naming_the_field(
    client: httpx.AsyncClient, tokens: dict[str, str], change: dict[str, object], field: str
) -> None:
    response = await client.post(
        "/v1/jobs", json=sprite_request(**change), headers=auth(tokens["alice"])
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [d["field"] for d in error["details"]], error
    assert all(d["reason"] for d in error["details"])


async def test_missing_required_fields_are_named(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    response = await client.post("/v1/jobs", json={}, headers=auth(tokens["alice"]))
    assert response.status_code == 422
    fields = {d["field"] for d in response.json()["error"]["details"]}
    assert fields == {"description", "image_size"}


async def test_bad_json_wrong_type_and_oversized_bodies(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    headers = {**auth(tokens["alice"]), "content-type": "application/json"}
    bad = await client.post("/v1/jobs", content=b"{not json", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_json"

    text = await client.post(
        "/v1/jobs",
        content=b"hello",
        headers={**auth(tokens["alice"]), "content-type": "text/plain"},
    )
    assert text.status_code == 415

    huge = json.dumps(sprite_request("x" * (65 * 1024))).encode()
    too_big = await client.post("/v1/jobs", content=huge, headers=headers)
    assert too_big.status_code == 413

    async def chunks():  # no Content-Length: the limit must hold on the stream too
        for _ in range(70):
            yield b" " * 1024

    streamed = await client.post("/v1/jobs", content=chunks(), headers=headers)
    assert streamed.status_code == 413


async def test_auth_required_and_jobs_are_private(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    assert (await client.post("/v1/jobs", json=sprite_request())).status_code == 401
    wrong = await client.post("/v1/jobs", json=sprite_request(), headers=auth("sq_nope"))
    assert wrong.status_code == 401
    # An unknown caller hears 401 whatever its body: the body is read before the caller
    # (a plain request looks both up in one round trip), but its faults are not told first.
    for body in ({"description": ""}, {"description": "x", "priority": "high"}):
        refused = await client.post("/v1/jobs", json=body, headers=auth("sq_nope"))
        assert refused.status_code == 401, body
    huge = await client.post("/v1/jobs", content=b"x" * (5 << 20))
    assert huge.status_code == 401
    job = (
        await client.post("/v1/jobs", json=sprite_request(), headers=auth(tokens["alice"]))
    ).json()
    for path in (f"/v1/jobs/{job['job_id']}", f"/v1/jobs/{job['job_id']}/result"):
        other = await client.get(path, headers=auth(tokens["bob"]))
        assert other.status_code == 404, path
    assert (await client.get("/v1/jobs/nope", headers=auth(tokens["alice"]))).status_code == 404


async def test_nothing_in_redis_is_pickled(
    make_stack, settings, redis: aioredis.Redis, tokens: dict[str, str]
) -> None:
    stack = make_stack(settings, worker=False)  # no worker: the arq payload stays in Redis
    async with httpx.AsyncClient(base_url=stack.url) as http:
        job = (
            await http.post("/v1/jobs", json=sprite_request(), headers=auth(tokens["alice"]))
        ).json()
    raw = await redis.get(job_key_prefix + job["job_id"])
    assert raw is not None and not raw.startswith(b"\x80")  # pickle protocol header
    payload = json.loads(raw)
    assert payload["f"] == "generate_sprite" and payload["a"] == [job["job_id"]]
    record = await redis.hgetall(keys.job(job["job_id"]))
    json.loads(record[b"request"])
    assert record[b"status"] == b"queued"


async def test_same_user_same_request_within_window_is_deduplicated(
    make_stack, settings, tokens: dict[str, str]
) -> None:
    stack = make_stack(settings, worker=False)
    async with httpx.AsyncClient(base_url=stack.url) as http:
        first = await http.post("/v1/jobs", json=sprite_request(), headers=auth(tokens["alice"]))
        same = await http.post(
            "/v1/jobs",
            json=sprite_request("  a small   red knight ", outline=None),
            headers=auth(tokens["alice"]),
        )
        other_user = await http.post("/v1/jobs", json=sprite_request(), headers=auth(tokens["bob"]))
    assert first.status_code == same.status_code == 202
    assert same.json()["job_id"] == first.json()["job_id"]
    assert same.json()["deduplicated"] is True and first.json()["deduplicated"] is False
    assert other_user.json()["job_id"] != first.json()["job_id"]


async def test_list_and_cancel(make_stack, settings, tokens: dict[str, str]) -> None:
    stack = make_stack(settings, worker=False)
    async with httpx.AsyncClient(base_url=stack.url) as http:
        job = (
            await http.post("/v1/jobs", json=sprite_request(), headers=auth(tokens["alice"]))
        ).json()
        listed = (await http.get("/v1/jobs", headers=auth(tokens["alice"]))).json()["items"]
        assert [j["job_id"] for j in listed] == [job["job_id"]]
        assert (await http.get("/v1/jobs", headers=auth(tokens["bob"]))).json()["items"] == []

        cancelled = await http.delete(f"/v1/jobs/{job['job_id']}", headers=auth(tokens["alice"]))
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        again = await http.delete(f"/v1/jobs/{job['job_id']}", headers=auth(tokens["alice"]))
        assert again.status_code == 409
        result = await http.get(f"/v1/jobs/{job['job_id']}/result", headers=auth(tokens["alice"]))
        assert result.status_code == 409 and result.json()["error"]["code"] == "not_ready"
        queue = (await http.get("/v1/queue")).json()
        assert queue["waiting"] == 0 and queue["active"] == 0
