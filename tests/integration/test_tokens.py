"""Tokens over real Redis: list, revoke, expiry, names, and failed look-ups slowed per address."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from pydantic import SecretStr

from backend.cli import main
from backend.config import Settings
from backend.embedded_redis import EmbeddedRedis
from backend.store import keys
from backend.store.tokens import BOOTSTRAP_ADMIN, TokenStore
from fixtures.factories import auth, sprite_request


async def test_list_shows_everything_but_the_token_and_revoke_ends_it_at_once(
    redis: aioredis.Redis,
) -> None:
    store = TokenStore(redis)
    alice = await store.create("alice")
    alice2 = await store.create("alice", expires_in_s=3600)
    root = await store.create("root", admin=True)
    listed = await store.list_tokens()
    assert [(t.user, t.admin) for t in listed] == [
        ("alice", False),
        ("alice", False),
        ("root", True),
    ]
    assert listed[1].expires_at is not None and listed[0].expires_at is None
    assert all(t.last_used_at is None for t in listed)
    assert not any(secret in repr(listed) for secret in (alice, alice2, root))

    assert await store.resolve(alice) is not None
    used = {t.user + str(t.expires_at): t.last_used_at for t in await store.list_tokens()}
    assert used["aliceNone"] is not None and used["rootNone"] is None

    assert await store.revoke(listed[0].id) is True
    assert await store.resolve(alice) is None
    assert await store.revoke(listed[0].id) is False
    assert [t.id for t in await store.list_tokens(user="alice")] == [listed[1].id]
    assert await store.revoke_user("alice") == [listed[1].id]
    assert await store.resolve(alice2) is None
    assert [t.user for t in await store.list_tokens()] == ["root"]
    # nothing left behind but root's record and its index entries
    assert await redis.hlen(keys.TOKENS) == 1  # type: ignore[misc]
    assert await redis.exists(keys.user_tokens("alice")) == 0


async def test_an_expired_token_is_refused_and_leaves_the_list(redis: aioredis.Redis) -> None:
    store = TokenStore(redis)
    token = await store.create("carol", expires_in_s=0.3)
    assert await store.resolve(token) is not None
    await asyncio.sleep(0.4)
    assert await store.resolve(token) is None  # at once, before Redis drops the record
    assert await store.list_tokens() == []


async def test_user_names_are_checked_where_tokens_are_made(redis: aioredis.Redis) -> None:
    from backend.errors import InvalidRequest

    store = TokenStore(redis)
    for bad in ("", "a b", "x" * 65, "ali/ce", "bob:1", "ünï", BOOTSTRAP_ADMIN):
        with pytest.raises(InvalidRequest):
            await store.create(bad)
    assert await store.create("Al.ice_2-x" + "y" * 54)
    assert await redis.hlen(keys.TOKENS) == 1  # type: ignore[misc]


def test_cli_create_list_revoke(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPRITEQ_REDIS_URL", redis_server.url)
    monkeypatch.setenv("SPRITEQ_LOG_LEVEL", "WARNING")
    assert main(["token", "create", "--user", "dora", "--expires-days", "2"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("sq_") and "\n" not in token  # only the token on stdout
    assert main(["token", "create", "--user", "dora", "--admin"]) == 0
    capsys.readouterr()

    assert main(["token", "list", "--user", "dora", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(t["user"], t["admin"]) for t in listed] == [("dora", False), ("dora", True)]
    assert 2 * 86400 - 60 < listed[0]["expires_at"] - time.time() <= 2 * 86400
    assert main(["token", "list"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "ID",
        "USER",
        "ADMIN",
        "CREATED",
        "LAST",
        "USED",
        "EXPIRES",
    ]
    assert listed[0]["id"] in table and token not in table

    assert main(["token", "revoke", listed[0]["id"]]) == 0
    assert json.loads(capsys.readouterr().out) == {"revoked": [listed[0]["id"]]}
    assert main(["token", "revoke", listed[0]["id"]]) == 1
    assert "no token with id" in capsys.readouterr().err
    assert main(["token", "revoke", "--user", "dora"]) == 0
    assert json.loads(capsys.readouterr().out) == {"revoked": [listed[1]["id"]]}


@pytest.mark.parametrize(
    ("name", "why"),
    [("bad name", "A-Z a-z 0-9 . _ -"), ("x" * 65, "1 to 64"), ("admin", "reserved")],
)
def test_cli_refuses_a_bad_user_name_and_says_why(
    name: str, why: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPRITEQ_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    assert main(["token", "create", "--user", name]) == 1
    out = capsys.readouterr()
    assert out.out == "" and why in out.err


async def test_a_revoked_or_expired_token_is_401_at_once(
    redis: aioredis.Redis, make_settings: Callable[..., Settings], make_stack: Callable[..., Any]
) -> None:
    store = TokenStore(redis)
    token = await store.create("erin")
    brief = await store.create("erin", expires_in_s=1.0)
    stack = make_stack(make_settings(limits={"submits_per_minute": 60}), worker=False)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        assert (await http.get("/v1/jobs", headers=auth(token))).status_code == 200
        submitted = await http.post("/v1/jobs", json=sprite_request("a revoked bat"),
                                    headers=auth(token))  # fmt: skip
        assert submitted.status_code == 202
        assert await redis.get(keys.user_submits("erin")) == b"1"
        assert (await http.get("/v1/jobs", headers=auth(brief))).status_code == 200
        assert await store.revoke_user("erin")
        assert (await http.get("/v1/jobs", headers=auth(token))).status_code == 401
        # A plain submission reads the caller in its first round trip, with its rate: the
        # revoked token is refused there too, and nothing is counted for it.
        refused = await http.post("/v1/jobs", json=sprite_request("a revoked bat"),
                                  headers=auth(token))  # fmt: skip
        assert refused.status_code == 401
        assert await redis.get(keys.user_submits("erin")) == b"1"
        later = await store.create("erin", expires_in_s=0.5)
        await asyncio.sleep(0.6)
        assert (await http.get("/v1/jobs", headers=auth(later))).status_code == 401


def _failures(reason: str) -> float:
    value = REGISTRY.get_sample_value("spritequeue_auth_failures_total", {"reason": reason})
    return value or 0.0


async def test_failed_lookups_are_counted_then_slowed_per_address(
    redis: aioredis.Redis, make_settings: Callable[..., Settings], make_stack: Callable[..., Any]
) -> None:
    settings = make_settings(auth={"failures_per_minute": 3, "failure_delay_max_s": 0.3})
    good = await TokenStore(redis).create("frank")
    stack = make_stack(settings, worker=False)
    invalid, throttled = _failures("invalid"), _failures("throttled")
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for _ in range(3):
            answer = await http.get("/v1/jobs", headers=auth("sq_wrong"))
            assert answer.status_code == 401
        started = time.monotonic()
        refused = await http.get("/v1/jobs", headers=auth("sq_wrong"))
        assert refused.status_code == 429 and time.monotonic() - started >= 0.1
        assert refused.json()["error"]["code"] == "too_many_auth_failures"
        assert 1 <= int(refused.headers["retry-after"]) <= 61
        # a valid token from the same address is neither refused nor slowed
        started = time.monotonic()
        assert (await http.get("/v1/jobs", headers=auth(good))).status_code == 200
        assert time.monotonic() - started < 0.1
        assert (await http.get("/v1/jobs")).status_code == 401  # missing: counted, not slowed
    assert _failures("invalid") - invalid == 3 and _failures("throttled") - throttled == 1


async def test_the_api_refuses_a_short_admin_token(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from backend.api.app import create_app
    from backend.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="at least 32"):
        create_app(make_settings(admin_token=SecretStr("short-admin-token")))
    create_app(make_settings(admin_token=SecretStr("x" * 32)))
    monkeypatch.setenv("SPRITEQ_ADMIN_TOKEN", "too-short")
    assert main(["api", "--port", "1"]) == 2
    assert "SPRITEQ_ADMIN_TOKEN is 9 characters; it must be at least 32" in capsys.readouterr().err


async def test_prompts_with_control_characters_are_422_and_invisible_ones_are_stripped(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    headers = auth(tokens["alice"])
    bad = await client.post("/v1/jobs", json=sprite_request("a knight\x1b[2J"), headers=headers)
    assert bad.status_code == 422
    (detail,) = bad.json()["error"]["details"]
    assert detail["field"] == "description" and "U+001B" in detail["reason"]
    plain = await client.post("/v1/jobs", json=sprite_request("a red knight"), headers=headers)
    hidden = sprite_request("a\u200b red\u202e knight\u2066\ufeff")
    tricked = await client.post("/v1/jobs", json=hidden, headers=headers)
    assert tricked.status_code in (200, 202)
    assert tricked.json()["job_id"] == plain.json()["job_id"]  # the same sprite: deduplicated
    assert tricked.json()["description"] == "a red knight"
