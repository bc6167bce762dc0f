"""The background-loop helpers: a loop survives failing steps, and a shutdown never hangs."""

from __future__ import annotations

import asyncio
import contextlib

from backend.aio import cancel_and_wait, run_every


async def swallows_one_cancel(ended: asyncio.Event) -> None:
    """Like a library call that eats a cancellation landing at the wrong moment."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60)
    try:
        await asyncio.sleep(60)
    finally:
        ended.set()


async def test_cancel_and_wait_cancels_again_when_the_first_cancel_is_swallowed() -> None:
    ended = asyncio.Event()
    task = asyncio.create_task(swallows_one_cancel(ended))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, retry_s=0.05), timeout=2)
    assert task.done() and ended.is_set()


async def test_run_every_keeps_going_through_failures() -> None:
    calls = 0
    enough = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 6:
            enough.set()
        if calls % 2:
            raise RuntimeError("redis went away")

    task = asyncio.create_task(run_every(0.001, flaky))
    await asyncio.wait_for(enough.wait(), timeout=2)
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_run_every_stops_even_when_a_step_swallows_the_cancel() -> None:
    started = asyncio.Event()

    async def swallowing_step() -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)

    task = asyncio.create_task(run_every(60, swallowing_step))
    await started.wait()
    task.cancel()  # one cancel only: the loop must notice it was asked to stop
    await asyncio.wait({task}, timeout=2)
    assert task.cancelled()
