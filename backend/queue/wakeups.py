"""Wake an idle worker when there is work, instead of polling every few milliseconds.

The scripts that make work available publish on ``sq:wake``: ``admitJob`` (a new job),
``requeueJob`` (a job back in the queue) and ``releasePermit`` (a PixelLab call permit
freed for a job that waited for one), and ``finishJob`` for a job whose webhook is due (its
listener wakes the deliverer, ``queue.webhooks``). Each worker keeps one subscription and an
``asyncio.Event``; its poll loop, when the last poll found nothing to start, waits on it,
for at most the fallback interval or until the next deferred job is due.

A message can be missed (the subscription drops with Redis, or lands between two waits):
the fallback poll bounds the delay it costs, so a wake-up is an optimisation, never a
requirement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from backend.aio import cancel_and_wait
from backend.store import keys

log = structlog.get_logger(__name__)

RESUBSCRIBE_S = 1.0
READ_S = 1.0


class Wakeups:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="wakeups")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Also call ``listener`` on every message (the webhook deliverer's wake-up)."""
        self._listeners.append(listener)

    def set(self) -> None:
        """Wake the worker from within the process (a slot freed)."""
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """Until a wake-up (True) or ``timeout_s`` (False); a wake-up that came since the
        last wait returns at once."""
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout_s, 0.0)):
                    await self._event.wait()
        woken = self._event.is_set()
        self._event.clear()
        return woken

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(keys.WAKE_CHANNEL)
                while True:
                    # A bounded read: no command is sent while idle, and the client's socket
                    # timeout never fires on a quiet channel.
                    message = await pubsub.get_message(timeout=READ_S)
                    if message is not None:
                        # "subscribe" too: (re)subscribed, so anything published meanwhile
                        # was missed.
                        self._event.set()
                        for listener in self._listeners:
                            listener()
            except (RedisError, OSError) as exc:
                log.debug("wakeups_lost", error=type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESUBSCRIBE_S)
