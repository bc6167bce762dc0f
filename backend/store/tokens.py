"""API tokens: created once, shown once, stored only as their SHA-256; listed and revoked by id.

A token's record is the hash ``sq:token:{sha256}`` with one field per attribute (``id``,
``user``, ``admin``, ``created_at``, ``expires_at``, ``priority``: ``high`` when it may submit
high-priority jobs), so a new attribute is one more field.
Two indexes make listing and revoking possible without scanning the keyspace:
``sq:tokens`` (id -> ``{"hash", "user"}``) and ``sq:user:{user}:tokens`` (the user's ids).
Every change to a record and its indexes is one MULTI block. An expiring token's record also
carries a Redis expiry, so it disappears by itself; the indexes drop it the next time they
are read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from backend.errors import InvalidRequest
from backend.store import keys
from backend.store.quotas import Screened, SubmitRate
from backend.store.writes import HitWrite

TOKEN_PREFIX = "sq_"
BOOTSTRAP_ADMIN = "admin"  # the user name of SPRITEQ_ADMIN_TOKEN: no stored token may take it
USER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
USER_NAME_RULE = "1 to 64 characters from A-Z a-z 0-9 . _ -"
LAST_USED_EVERY_S = 60.0  # `last used` is exact to a minute: one write per token per minute


@dataclass(frozen=True)
class Principal:
    user: str
    admin: bool
    high_priority: bool = False  # may submit ``priority: high`` (admins always may)

    @property
    def may_submit_high(self) -> bool:
        return self.admin or self.high_priority


@dataclass(frozen=True)
class TokenInfo:
    """What ``token list`` shows: everything about a token except the token."""

    id: str
    user: str
    admin: bool
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    priority: str = "normal"  # the highest priority it may submit

    @classmethod
    def from_fields(cls, fields: dict[str, str], last_used_at: float | None) -> TokenInfo:
        expires = fields.get("expires_at")
        return cls(
            id=fields["id"],
            user=fields["user"],
            admin=fields.get("admin") == "1",
            created_at=float(fields["created_at"]),
            expires_at=float(expires) if expires else None,
            last_used_at=last_used_at,
            priority=fields.get("priority", "normal"),
        )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_user_name(user: str) -> str:
    """The name, if a token may be made for it; raises InvalidRequest (saying why) if not."""
    if not USER_NAME.fullmatch(user):
        raise InvalidRequest(f"user name {user!r} is not allowed: use {USER_NAME_RULE}")
    if user == BOOTSTRAP_ADMIN:
        raise InvalidRequest(
            f"user name {user!r} is reserved for the bootstrap admin (SPRITEQ_ADMIN_TOKEN)"
        )
    return user


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


class TokenStore:
    def __init__(self, redis: aioredis.Redis, *, bootstrap_admin: SecretStr | None = None) -> None:
        self._redis = redis
        self._bootstrap = bootstrap_admin

    async def create(
        self,
        user: str,
        *,
        admin: bool = False,
        expires_in_s: float | None = None,
        high_priority: bool = False,
    ) -> str:
        """A new token for ``user``; the plain token exists only in the return value.
        ``high_priority``: it may submit ``priority: high`` jobs.

        Raises InvalidRequest for a user name outside ``USER_NAME_RULE`` or the reserved one.
        """
        check_user_name(user)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest, token_id = token_hash(token), secrets.token_hex(6)
        now = time.time()
        record: dict[str, Any] = {
            "id": token_id,
            "user": user,
            "admin": "1" if admin else "0",
            "created_at": now,
            "priority": "high" if high_priority else "normal",
        }
        async with self._redis.pipeline(transaction=True) as multi:
            multi.hset(keys.token(digest), mapping=record)
            if expires_in_s is not None:
                multi.hset(keys.token(digest), "expires_at", str(now + expires_in_s))
                multi.expireat(keys.token(digest), int(now + expires_in_s) + 1)
            multi.hset(keys.TOKENS, token_id, json.dumps({"hash": digest, "user": user}))
            multi.sadd(keys.user_tokens(user), token_id)
            await multi.execute()
        return token

    async def resolve(self, token: str) -> Principal | None:
        """Who holds ``token``; None when it is unknown, revoked or expired."""
        found, _ = await self.resolve_and_read(token, None)
        return found

    async def resolve_and_read(
        self, token: str, hash_key: str | None
    ) -> tuple[Principal | None, dict[bytes, bytes]]:
        """``resolve``, and the fields of the hash ``hash_key`` read in the same round trip.

        A job's status, events and result routes need the caller and the job: one round
        trip for both, and the caller is still checked against Redis on every request, so
        a revoked token is refused at once (no per-process cache to wait out).
        """
        bootstrap = self._bootstrap is not None and hmac.compare_digest(
            token.encode(), self._bootstrap.get_secret_value().encode()
        )
        if bootstrap and hash_key is None:
            return Principal(BOOTSTRAP_ADMIN, admin=True), {}
        digest = token_hash(token)
        async with self._redis.pipeline(transaction=False) as pipe:
            if not bootstrap:
                pipe.hmget(keys.token(digest), ["id", "user", "admin", "expires_at", "priority"])
                pipe.hget(keys.TOKENS_LAST_USED, digest)
            if hash_key is not None:
                pipe.hgetall(hash_key)
            replies = await pipe.execute()
        read: dict[bytes, bytes] = replies.pop() if hash_key is not None else {}
        if bootstrap:
            return Principal(BOOTSTRAP_ADMIN, admin=True), read
        (token_id, user, admin, expires_at, priority), last_used = replies
        now = time.time()
        if user is None or (expires_at is not None and float(expires_at) <= now):
            return None, {}
        stale = last_used is None or now - float(last_used) >= LAST_USED_EVERY_S
        if token_id is not None and stale:
            # At most one write a minute per token, kept out of the record: a write racing a
            # revoke must not bring a deleted record back (the revoke drops this entry too).
            await self._redis.hset(keys.TOKENS_LAST_USED, digest, str(now))  # type: ignore[misc]
        high = priority == b"high"
        return Principal(user.decode(), admin=admin == b"1", high_priority=high), read

    async def resolve_for_submit(
        self, token: str, rate: SubmitRate, dedup_key: str, hit: HitWrite | None = None
    ) -> tuple[Principal | None, Screened | None]:
        """``resolve``, with the caller's submit rate counted and ``dedup_key`` (the user
        written ``{user}``) read in the same round trip: a plain submission's first one.
        With ``hit``, that round trip also writes the cache hit's job when it may
        (``Screened.served``); the bootstrap admin's never does (it is not in Redis).
        (None, None) for an unknown, revoked or expired token."""
        if self._bootstrap is not None and hmac.compare_digest(
            token.encode(), self._bootstrap.get_secret_value().encode()
        ):
            admin_key = dedup_key.replace("{user}", BOOTSTRAP_ADMIN)
            screened = await rate.check_and_get(BOOTSTRAP_ADMIN, admin_key)
            return Principal(BOOTSTRAP_ADMIN, admin=True), screened
        digest = token_hash(token)
        found = await rate.with_caller(
            digest, [keys.token(digest), keys.TOKENS_LAST_USED], LAST_USED_EVERY_S, dedup_key,
            hit,
        )  # fmt: skip
        if found is None:
            return None, None
        (name, admin, priority), screened = found
        principal = Principal(name.decode(), admin=admin == b"1", high_priority=priority == b"high")
        return principal, screened

    async def list_tokens(self, *, user: str | None = None) -> list[TokenInfo]:
        """Every live token (or one user's), oldest first; index entries of gone ones dropped."""
        index = await self._index(user)
        if not index:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for digest, _ in index.values():
                pipe.hgetall(keys.token(digest))
            pipe.hmget(keys.TOKENS_LAST_USED, [digest for digest, _ in index.values()])
            *records, last_used = await pipe.execute()
        found: list[TokenInfo] = []
        gone: dict[str, tuple[str, str]] = {}
        now = time.time()
        for (token_id, entry), raw, last in zip(index.items(), records, last_used, strict=True):
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            if "user" not in fields or "id" not in fields:
                gone[token_id] = entry
                continue
            info = TokenInfo.from_fields(fields, float(last) if last is not None else None)
            if info.expires_at is None or info.expires_at > now:
                found.append(info)
        if gone:
            await self._drop_index(gone)
        return sorted(found, key=lambda info: (info.created_at, info.id))

    async def revoke(self, token_id: str) -> bool:
        """Delete one token by id; False when there is no such token."""
        index = await self._index(None, ids=[token_id])
        if not index:
            return False
        await self._delete(index)
        return True

    async def revoke_user(self, user: str) -> list[str]:
        """Delete every token of ``user``; the ids deleted."""
        index = await self._index(user)
        if index:
            await self._delete(index)
        return sorted(index)

    async def _index(
        self, user: str | None, *, ids: list[str] | None = None
    ) -> dict[str, tuple[str, str]]:
        """id -> (hash, user) from ``sq:tokens``: all, one user's, or the given ids."""
        if ids is None and user is not None:
            ids = sorted(m.decode() for m in await self._redis.smembers(keys.user_tokens(user)))  # type: ignore[misc]
        if ids is None:
            raw = await self._redis.hgetall(keys.TOKENS)  # type: ignore[misc]
            entries = {k.decode(): v for k, v in raw.items()}
        elif ids:
            values = await self._redis.hmget(keys.TOKENS, ids)  # type: ignore[misc]
            entries = {i: v for i, v in zip(ids, values, strict=True) if v is not None}
        else:
            entries = {}
        index: dict[str, tuple[str, str]] = {}
        for token_id, value in entries.items():
            entry = json.loads(value)
            index[token_id] = (entry["hash"], entry["user"])
        return index

    async def _delete(self, index: dict[str, tuple[str, str]]) -> None:
        async with self._redis.pipeline(transaction=True) as multi:
            for token_id, (digest, user) in index.items():
                multi.delete(keys.token(digest))
                multi.hdel(keys.TOKENS, token_id)
                multi.hdel(keys.TOKENS_LAST_USED, digest)
                multi.srem(keys.user_tokens(user), token_id)
            await multi.execute()

    async def _drop_index(self, gone: dict[str, tuple[str, str]]) -> None:
        async with self._redis.pipeline(transaction=True) as multi:
            for token_id, (digest, user) in gone.items():
                multi.hdel(keys.TOKENS, token_id)
                multi.hdel(keys.TOKENS_LAST_USED, digest)
                multi.srem(keys.user_tokens(user), token_id)
            await multi.execute()
