"""Small asyncio helpers shared by the long-lived background loops (hub, leases, worker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None, retry_s: float = 1.0) -> None:
    """Cancel the tasks and wait until each has ended; ``None`` entries are skipped.

    A task still running ``retry_s`` after its cancel is cancelled again: a library call can
    swallow a cancellation that lands at the wrong moment (we saw a worker's loop outlive
    its cancel while its Redis calls were in flight), and one lost cancel must not hang a
    shutdown.
    """
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        while not task.done():
            if not (await asyncio.wait({task}, timeout=retry_s))[0]:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_every(interval_s: float, step: Callable[[], Awaitable[Any]]) -> None:
    """Call ``step`` every ``interval_s`` until cancelled; a failing step is logged, not fatal.

    Only the first failure of a run of them is a warning (and the recovery is logged), so a
    one-second loop does not flood the logs through a Redis outage.
    """
    name = getattr(step, "__name__", repr(step))
    failing = False
    this = asyncio.current_task()
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            (log.debug if failing else log.warning)(
                "background_step_failed", step=name, error=str(exc) or type(exc).__name__
            )
            failing = True
        else:
            if failing:
                log.info("background_step_recovered", step=name)
            failing = False
        if this is not None and this.cancelling():
            raise asyncio.CancelledError  # the step swallowed our cancellation
        await asyncio.sleep(interval_s)
