"""API tokens: created once, shown once, stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import SecretStr

from backend.store import keys

TOKEN_PREFIX = "sq_"
BOOTSTRAP_ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    user: str
    admin: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, redis: aioredis.Redis, *, bootstrap_admin: SecretStr | None = None) -> None:
        self._redis = redis
        self._bootstrap = bootstrap_admin

    async def create(self, user: str, *, admin: bool = False) -> str:
        """A new token for ``user``; the plain token exists only in the return value."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._redis.hset(  # type: ignore[misc]
            keys.token(token_hash(token)),
            mapping={"user": user, "admin": "1" if admin else "0", "created_at": time.time()},
        )
        return token

    async def resolve(self, token: str) -> Principal | None:
        if self._bootstrap is not None and hmac.compare_digest(
            token.encode(), self._bootstrap.get_secret_value().encode()
        ):
            return Principal(BOOTSTRAP_ADMIN, admin=True)
        fields = await self._redis.hmget(keys.token(token_hash(token)), ["user", "admin"])  # type: ignore[misc]
        user, admin = fields
        if user is None:
            return None
        return Principal(user.decode(), admin=admin == b"1")
