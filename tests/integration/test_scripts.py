"""Scripts sent with another command in one round trip: loaded again after Redis forgets them."""

from __future__ import annotations

import redis.asyncio as aioredis

from backend.store import keys
from backend.store.scripts import ScriptCall, Scripts


async def test_a_pipelined_script_is_loaded_again_after_a_script_flush(
    redis: aioredis.Redis,
) -> None:
    # What a restart without persistence of the script cache, or a failover, does: the
    # EVALSHA meets NOSCRIPT, and the pair is sent again once the script is loaded.
    scripts = Scripts(redis)
    await scripts.load()
    await redis.set("sq:test:read", b"there")
    await redis.script_flush()

    (admitted, count), value = await scripts.run_and_get(
        "countSubmit", [keys.user_submits("alice")], [5, 60_000], get="sq:test:read"
    )
    (_, again), _ = await scripts.run_and_get(
        "countSubmit", [keys.user_submits("alice")], [5, 60_000], get="sq:test:none"
    )

    assert (admitted, count, value, again) == (1, 1, b"there", 2)  # counted once per call


async def test_a_pipelined_script_makes_one_round_trip(redis: aioredis.Redis) -> None:
    # redis-py's own pipelined scripts ask SCRIPT EXISTS before every call.
    scripts = Scripts(redis)
    await scripts.load()
    before = await redis.info("commandstats")
    await scripts.run_and_get("countSubmit", [keys.user_submits("bob")], [5, 60_000], get="x")
    after = await redis.info("commandstats")
    assert after.get("cmdstat_script|exists") == before.get("cmdstat_script|exists")


async def test_scripts_run_together_are_each_run_once_after_a_script_flush(
    redis: aioredis.Redis,
) -> None:
    # After NOSCRIPT only the scripts Redis did not know run again: a count is not doubled.
    scripts = Scripts(redis)
    await scripts.load()
    count = ScriptCall("countSubmit", [keys.user_submits("carol")], [5, 60_000])
    assert [r[1] for r in await scripts.run_many([count, count])] == [1, 2]
    await redis.script_flush()
    assert [r[1] for r in await scripts.run_many([count, count])] == [3, 4]
    assert int(await redis.get(keys.user_submits("carol"))) == 4
