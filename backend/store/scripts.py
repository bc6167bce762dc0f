"""Loads every ``lua/*.lua`` file once at start-up and runs them by name.

File names follow BullMQ's ``verbNoun-<numkeys>.lua``; the number of keys is checked on
every call so a wrapper can't silently pass the wrong arguments. As in BullMQ, a line
``--@include name`` is replaced by ``lua/include/name.lua``, so helpers live in one place.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_INCLUDE = re.compile(r"^--@include ([\w-]+)$", re.MULTILINE)


def _lua_files(folder: Traversable) -> dict[str, str]:
    return {
        entry.name.removesuffix(".lua"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }


def _folder() -> Traversable:
    return resources.files("backend.store").joinpath("lua")


@functools.cache
def _includes() -> dict[str, str]:
    return _lua_files(_folder().joinpath("include"))


def with_includes(text: str) -> str:
    """``text`` with each ``--@include name`` line replaced by ``lua/include/name.lua``."""
    return _INCLUDE.sub(lambda match: _includes()[match.group(1)], text)


def _read_scripts() -> dict[str, tuple[int, str]]:
    scripts: dict[str, tuple[int, str]] = {}
    for stem, text in _lua_files(_folder()).items():
        name, _, numkeys = stem.rpartition("-")
        scripts[name] = (int(numkeys), with_includes(text))
    return scripts


@dataclass(frozen=True)
class ScriptCall:
    """One script with its keys and arguments, to run with others (``Scripts.run_many``)."""

    name: str
    keys: list[str]
    args: list[Any]


class Scripts:
    """The registered scripts of one Redis client."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._scripts: dict[str, tuple[int, AsyncScript]] = {
            name: (numkeys, redis.register_script(text))
            for name, (numkeys, text) in _read_scripts().items()
        }

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def load(self) -> None:
        """SCRIPT LOAD them all, so the first call on a hot path is a plain EVALSHA."""
        for _, script in self._scripts.values():
            script.sha = await self._redis.script_load(script.script)

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        numkeys, script = self._scripts[name]
        if len(keys) != numkeys:
            raise ValueError(f"{name} takes {numkeys} keys, got {len(keys)}")
        return await script(keys=keys, args=args)

    async def run_many(
        self, calls: list[ScriptCall], *, then: tuple[Any, ...] | None = None
    ) -> list[Any]:
        """Run several scripts in one round trip (a pipeline: each atomic, not all together),
        and ``then`` one more command after them (its reply last).

        A script Redis no longer knows (NOSCRIPT, after a restart or a failover) is loaded
        and run again on its own; the others ran once.
        """
        for call in calls:
            if len(call.keys) != self._scripts[call.name][0]:
                raise ValueError(f"{call.name} takes {self._scripts[call.name][0]} keys")
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in calls:
                numkeys, script = self._scripts[call.name]
                pipe.evalsha(script.sha, numkeys, *call.keys, *call.args)
            if then is not None:
                pipe.execute_command(*then)
            results = list(await pipe.execute(raise_on_error=False))
        if then is not None and isinstance(results[-1], Exception):
            raise results[-1]
        for index, (call, result) in enumerate(zip(calls, results[: len(calls)], strict=True)):
            if isinstance(result, NoScriptError):
                results[index] = await self.run(call.name, call.keys, call.args)
            elif isinstance(result, Exception):
                raise result
        return results

    async def run_and_get(
        self, name: str, keys: list[str], args: list[Any], *, get: str
    ) -> tuple[Any, bytes | None]:
        """Run a script and ``GET get`` in one round trip (a pipeline, not atomic)."""
        result, value = await self._pipelined(name, keys, args, ("GET", get))
        return result, value

    async def run_and_read(
        self, name: str, keys: list[str], args: list[Any], *, hash_key: str
    ) -> tuple[Any, dict[bytes, bytes]]:
        """Run a script and ``HGETALL hash_key`` in one round trip (a pipeline, not atomic)."""
        result, fields = await self._pipelined(name, keys, args, ("HGETALL", hash_key))
        return result, fields

    async def run_then_wait(
        self, name: str, keys: list[str], args: list[Any], *, replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """Run a script, then ``WAIT replicas timeout_ms`` on the same connection (WAIT
        counts the replicas that acknowledged this connection's writes); returns the
        script's result and that count. A missing script is loaded first (as in ``run``)."""
        result, acked = await self._pipelined(name, keys, args, ("WAIT", replicas, timeout_ms))
        return result, int(acked)

    async def _pipelined(
        self, name: str, keys: list[str], args: list[Any], then: tuple[Any, ...]
    ) -> list[Any]:
        """``EVALSHA`` then one more command, in one round trip.

        redis-py's own pipelined scripts ask ``SCRIPT EXISTS`` first, a round trip of its
        own on every call; the scripts are loaded at start-up, so this sends the EVALSHA as
        it is and loads the script only when Redis answers NOSCRIPT (after a restart or a
        failover), then sends the pair again.
        """
        numkeys, script = self._scripts[name]
        if len(keys) != numkeys:
            raise ValueError(f"{name} takes {numkeys} keys, got {len(keys)}")
        for first_try in (True, False):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, numkeys, *keys, *args)
                pipe.execute_command(*then)
                try:
                    return list(await pipe.execute())
                except NoScriptError:
                    if not first_try:
                        raise
            script.sha = await self._redis.script_load(script.script)
        raise AssertionError("unreachable")
