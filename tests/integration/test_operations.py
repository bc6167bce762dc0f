"""Every operation end to end over the mock: submit, complete, sheets, frames, GIFs, chaining,
input checks and the cache across users. Real Redis, real HTTP, a real worker."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from PIL import Image

from backend import sprites
from backend.store import keys
from fixtures.factories import auth, sprite_request, wait_for_status
from mocks.png import sprite_png
from tests.conftest import Stack


def png_b64(width: int, height: int, seed: bytes = b"input", *, data_url: bool = False) -> str:
    text = base64.b64encode(sprite_png(width, height, seed.ljust(16, b"."))).decode()
    return f"data:image/png;base64,{text}" if data_url else text


def noisy_image(width: int, height: int) -> dict[str, str]:
    """A PNG that does not compress: random pixels."""
    out = io.BytesIO()
    Image.frombytes("RGBA", (width, height), os.urandom(width * height * 4)).save(out, "PNG")
    return {"type": "base64", "base64": base64.b64encode(out.getvalue()).decode()}


def image(width: int, height: int, seed: bytes = b"input") -> dict[str, str]:
    return {"type": "base64", "base64": png_b64(width, height, seed)}


def bodies() -> dict[str, tuple[dict[str, Any], int, int, int]]:
    """operation -> (body, frames, frame width, frame height)"""
    return {
        "pixflux": (sprite_request("ops: pixflux", init_image=image(64, 64)), 1, 64, 64),
        "bitforge": (
            {"operation": "bitforge", "description": "ops: bitforge", "style_strength": 40,
             "image_size": {"width": 48, "height": 48}, "style_image": image(32, 32)},
            1, 48, 48,
        ),
        "rotate": (
            {"operation": "rotate", "image_size": {"width": 32, "height": 32},
             "from_image": image(32, 32), "from_direction": "south", "to_direction": "east"},
            1, 32, 32,
        ),
        "inpaint": (
            {"operation": "inpaint", "description": "ops: inpaint",
             "image_size": {"width": 40, "height": 24}, "inpainting_image": image(40, 24),
             "mask_image": image(40, 24, b"mask")},
            1, 40, 24,
        ),
        "animate_with_text": (
            {"operation": "animate_with_text", "description": "ops: mage", "action": "walk",
             "image_size": {"width": 64, "height": 64}, "reference_image": image(64, 64)},
            4, 64, 64,
        ),
        "animate_with_skeleton": (
            {"operation": "animate_with_skeleton", "image_size": {"width": 128, "height": 128},
             "reference_image": image(128, 128)},
            3, 128, 128,
        ),
    }  # fmt: skip


async def submit(http: httpx.AsyncClient, token: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post("/v1/jobs", json=body, headers=auth(token))


async def completed(http: httpx.AsyncClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await submit(http, token, body)
    assert response.status_code in (200, 202), response.text
    return await wait_for_status(http, response.json()["job_id"], token, {"completed", "failed"})


@pytest.mark.parametrize("operation", list(bodies()))
async def test_each_operation_completes_with_its_frames(
    operation: str, stack: Stack, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    body, frames, width, height = bodies()[operation]
    token = tokens["alice"]
    job = await completed(client, token, body)
    assert job["status"] == "completed", job
    assert job["operation"] == operation
    result = job["result"]
    assert (result["frames"], result["frame_size"]) == (frames, {"width": width, "height": height})
    sheet = await client.get(result["url"], headers=auth(token))
    assert sheet.headers["content-type"] == "image/png"
    info = sprites.png_info(sheet.content)
    assert (info.width, info.height) == (frames * width, height)
    for index in range(frames):
        one = await client.get(f"{result['url']}?frame={index}", headers=auth(token))
        assert one.status_code == 200
        assert sprites.png_info(one.content) == sprites.PngInfo(width, height)
    gif = await client.get(f"{result['url']}?format=gif", headers=auth(token))
    assert gif.headers["content-type"] == "image/gif"
    assert sprites.gif_frame_count(gif.content) == frames
    beyond = await client.get(f"{result['url']}?frame={frames}", headers=auth(token))
    assert beyond.status_code == 422
    assert beyond.json()["error"]["details"][0]["field"] == "frame"


async def test_a_chain_pixflux_rotate_animate_without_uploads(
    stack: Stack, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    token = tokens["alice"]
    knight = await completed(client, token, sprite_request("ops: chain knight"))
    rotated = await completed(
        client,
        token,
        {"operation": "rotate", "image_size": {"width": 64, "height": 64},
         "from_image": {"type": "job", "job_id": knight["job_id"]}, "to_direction": "west"},
    )  # fmt: skip
    assert rotated["status"] == "completed", rotated
    walk = await completed(
        client,
        token,
        {"operation": "animate_with_text", "description": "knight", "action": "walk",
         "image_size": {"width": 64, "height": 64},
         "reference_image": {"type": "job", "job_id": rotated["job_id"]}},
    )  # fmt: skip
    assert walk["result"]["frames"] == 4
    # Frame 2 of the walk as the next input: the chain reads one frame of a sheet.
    again = await completed(
        client,
        token,
        {"operation": "rotate", "image_size": {"width": 64, "height": 64},
         "from_image": {"type": "job", "job_id": walk["job_id"], "frame": 2}},
    )  # fmt: skip
    assert again["status"] == "completed"
    no_frame = await submit(
        client,
        token,
        {"operation": "rotate", "image_size": {"width": 64, "height": 64},
         "from_image": {"type": "job", "job_id": walk["job_id"], "frame": 4}},
    )  # fmt: skip
    assert no_frame.status_code == 422
    assert no_frame.json()["error"]["details"][0]["field"] == "from_image.frame"


async def test_a_chained_job_is_keyed_by_its_pixels(
    stack: Stack, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    """Chaining and uploading the same image are the same work: a cache hit for bob."""
    knight = await completed(client, tokens["alice"], sprite_request("ops: keyed knight"))
    png = (await client.get(knight["result"]["url"], headers=auth(tokens["alice"]))).content
    chained = {"operation": "rotate", "image_size": {"width": 64, "height": 64},
               "from_image": {"type": "job", "job_id": knight["job_id"]}}  # fmt: skip
    first = await completed(client, tokens["alice"], chained)
    uploaded = {**chained, "from_image": {"base64": base64.b64encode(png).decode()}}
    hit = await submit(client, tokens["bob"], uploaded)
    assert hit.status_code == 200, hit.text
    assert hit.json()["cached"] is True
    assert hit.json()["result"]["sha256"] == first["result"]["sha256"]


async def test_another_users_job_is_not_an_input(
    stack: Stack, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    knight = await completed(client, tokens["alice"], sprite_request("ops: alice's knight"))
    body = {"operation": "rotate", "image_size": {"width": 64, "height": 64},
            "from_image": {"type": "job", "job_id": knight["job_id"]}}  # fmt: skip
    response = await submit(client, tokens["bob"], body)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    unknown = {**body, "from_image": {"type": "job", "job_id": "0" * 32}}
    assert (await submit(client, tokens["alice"], unknown)).status_code == 404


@pytest.mark.parametrize(
    ("field_value", "field", "reason"),
    [
        (image(64, 64), "from_image", "is 64x64 but image_size is 32x32"),
        ({"base64": base64.b64encode(b"GIF89a" + b"\0" * 64).decode()}, "from_image.base64",
         "not a readable PNG"),
        ({"base64": "not base64!"}, "from_image.base64", "not valid base64"),
        ({"type": "url", "url": "http://x"}, "from_image", "tag"),
    ],
)  # fmt: skip
async def test_bad_images_are_422_naming_the_field(
    field_value: dict[str, Any],
    field: str,
    reason: str,
    stack: Stack,
    client: httpx.AsyncClient,
    tokens: dict[str, str],
) -> None:
    body = {"operation": "rotate", "image_size": {"width": 32, "height": 32},
            "from_image": field_value}  # fmt: skip
    response = await submit(client, tokens["alice"], body)
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"].startswith(field), detail
    assert reason in detail["reason"], detail


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"operation": "rotate", "image_size": {"width": 48, "height": 48}}, "image_size"),
        ({"operation": "animate_with_text", "image_size": {"width": 32, "height": 32},
          "description": "a", "action": "walk", "reference_image": image(32, 32)}, "image_size"),
        ({"operation": "animate_with_text", "image_size": {"width": 64, "height": 64},
          "description": "a", "action": "walk", "reference_image": image(64, 64),
          "n_frames": 21}, "n_frames"),
        ({"operation": "inpaint", "description": "a",
          "image_size": {"width": 32, "height": 32}, "inpainting_image": image(32, 32)},
         "mask_image"),
        ({"operation": "sketch", "description": "a"}, "operation"),
    ],
)  # fmt: skip
async def test_requests_pixellab_would_refuse_are_422(
    body: dict[str, Any], field: str, stack: Stack, client: httpx.AsyncClient,
    tokens: dict[str, str],
) -> None:  # fmt: skip
    response = await submit(client, tokens["alice"], body)
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert any(name.startswith(field) for name in fields), fields


async def test_body_limits_with_and_without_images(
    stack: Stack, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    limits = stack.settings.limits
    # An image body over the small limit is fine (a noisy 400x400 PNG is ~850 KiB of base64).
    big = noisy_image(400, 400)
    assert len(big["base64"]) > limits.max_body_bytes
    body = sprite_request("ops: big init", image_size={"width": 400, "height": 400},
                          init_image=big)  # fmt: skip
    assert (await submit(client, tokens["alice"], body)).status_code == 202
    # Over the image limit: 413, whatever the body holds.
    huge = {"operation": "rotate", "image_size": {"width": 32, "height": 32},
            "from_image": {"base64": "A" * limits.max_image_body_bytes}}  # fmt: skip
    response = await submit(client, tokens["alice"], huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    # Over the small limit with no image in it: 413 too.
    padded = sprite_request("x" * 1000, seed=1, padding=" " * limits.max_body_bytes)
    assert (await submit(client, tokens["alice"], padded)).status_code == 413


async def test_same_images_across_users_are_one_call_and_stored_once(
    stack: Stack,
    client: httpx.AsyncClient,
    tokens: dict[str, str],
    redis: aioredis.Redis,
) -> None:
    text = png_b64(64, 64, b"shared")
    body = {"operation": "animate_with_text", "description": "ops: shared", "action": "jump",
            "image_size": {"width": 64, "height": 64},
            "reference_image": {"type": "base64", "base64": text}}  # fmt: skip
    first = await completed(client, tokens["alice"], body)
    # The same pixels as a data URL, from another user: answered from the cache.
    again = {**body, "reference_image": {"base64": "data:image/png;base64," + text}}
    hit = await submit(client, tokens["bob"], again)
    assert hit.status_code == 200, hit.text
    assert hit.json()["cached"] is True and hit.json()["result"]["frames"] == 4
    async with httpx.AsyncClient() as mock:
        stats = (await mock.get(stack.settings.pixellab.base_url + "/_mock/stats")).json()
    assert stats["by_description"]["ops: shared"] == 1
    # The image is stored once, by digest; the job record holds only the digest.
    digest = hashlib.sha256(base64.b64decode(text)).hexdigest()
    assert await redis.get(keys.input_image(digest)) == base64.b64decode(text)
    assert await redis.ttl(keys.input_image(digest)) > 0
    record = await redis.hget(keys.job(first["job_id"]), "request")
    assert digest.encode() in record and text[:40].encode() not in record


async def test_result_query_parameters_are_checked(
    stack: Stack, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    job = await completed(client, tokens["alice"], sprite_request("ops: params"))
    url, headers = job["result"]["url"], auth(tokens["alice"])
    assert (await client.get(f"{url}?format=bmp", headers=headers)).status_code == 422
    assert (await client.get(f"{url}?frame=-1", headers=headers)).status_code == 422
    still = await client.get(f"{url}?format=gif", headers=headers)
    assert sprites.gif_frame_count(still.content) == 1
