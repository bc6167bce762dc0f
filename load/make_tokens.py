"""Create load-test tokens (N artists and one admin) and write them to a JSON file.

    .venv/bin/python load/make_tokens.py --users 50 --out load/tokens.json

The Redis URL is taken from ``--redis-url``, else ``SPRITEQ_REDIS_URL``, else the file that
``spritequeue dev`` writes (``.spritequeue/dev.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

import redis.asyncio as aioredis

from backend.store.tokens import TokenStore

DEV_INFO = Path(".spritequeue/dev.json")


def redis_url(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("SPRITEQ_REDIS_URL"):
        return os.environ["SPRITEQ_REDIS_URL"]
    if DEV_INFO.exists():
        return str(json.loads(DEV_INFO.read_text())["redis_url"])
    raise SystemExit("no Redis URL: pass --redis-url, set SPRITEQ_REDIS_URL or run spritequeue dev")


async def create(url: str, users: int) -> dict[str, object]:
    client = aioredis.Redis.from_url(url)
    try:
        store = TokenStore(client)
        artists = [await store.create(f"load-artist-{n}") for n in range(users)]
        return {"artists": artists, "admin": await store.create("load-admin", admin=True)}
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--redis-url")
    parser.add_argument("--out", default="load/tokens.json")
    args = parser.parse_args()
    tokens = asyncio.run(create(redis_url(args.redis_url), args.users))
    Path(args.out).write_text(json.dumps(tokens, indent=2))
    print(f"wrote {args.users} artist tokens and an admin token to {args.out}")


if __name__ == "__main__":
    main()
