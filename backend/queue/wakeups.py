"""Wake an idle worker when there is work, instead of polling every few milliseconds.

The scripts that make work available publish on ``sq:wake``, and the message says what:
``job <id>`` (``admitJob``: a new job, named), ``job`` (``admitGroup``: several),
``requeue`` (``requeueJob``: a job back in the queue, perhaps deferred), ``permit``
(``releasePermit``, a resume: a PixelLab call permit freed for a job that waited for one),
``abort`` (``finishJob``: a running job was cancelled) and ``webhook`` (``finishJob``, a
cache hit: a webhook is due). Each worker keeps one subscription and an ``asyncio.Event``;
its poll loop, when the last poll left nothing due to start, waits on it, for at most the
fallback interval or until the next deferred job is due. What the message says spares the
worker the reads it would not need:
- a job named in its message is claimed at once, with no read of the queue before or after
  it (``SpriteWorker._start_named``); any other kind of work (``POLL``) is found by a poll;
- the next deferred job is looked up only after a ``requeue``, arq's abort set only after
  an ``abort``;
- a ``webhook`` wakes the deliverer, not the poll loop.

A message can be missed (the subscription drops with Redis, or lands between two waits):
the fallback poll bounds the delay it costs, and a (re)subscription counts as every kind
of message at once, so a wake-up is an optimisation, never a requirement.
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
# The most job ids kept between two looks (``take_jobs``): past it the poll finds them.
MAX_NAMED_JOBS = 64
# What a message on sq:wake says (see the module's docstring); EVERYTHING stands for a
# (re)subscription, or a message without a kind.
JOB, REQUEUE, PERMIT, ABORT, WEBHOOK = "job", "requeue", "permit", "abort", "webhook"
EVERYTHING = "*"
# Taken like a kind: work no message named may be due, so the queue must be read.
POLL = "poll"


class Wakeups:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []
        # Whether a job may have been deferred, a running job aborted, or unnamed work come
        # since the worker last looked (``take``); all true until the first look.
        self._seen = {REQUEUE, ABORT, POLL}
        # Jobs named by ``job <id>`` messages since the last ``take_jobs``, oldest first.
        self._jobs: list[str] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="wakeups")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when a webhook is due (the deliverer's wake-up)."""
        self._listeners.append(listener)

    def take(self, kind: str) -> bool:
        """Whether a message of ``kind`` (``REQUEUE``, ``ABORT``, ``POLL``) came since the
        last ``take`` of it."""
        seen = kind in self._seen
        self._seen.discard(kind)
        return seen

    def take_jobs(self) -> list[str]:
        """The jobs named by messages since the last call, oldest first."""
        named, self._jobs = self._jobs, []
        return named

    def _received(self, kind: str, job_id: str = "") -> None:
        if kind == JOB and job_id and len(self._jobs) < MAX_NAMED_JOBS:
            self._jobs.append(job_id)
        elif kind not in (ABORT, WEBHOOK):  # unnamed work, or names past the cap
            self._seen.add(POLL)
        if kind in (WEBHOOK, EVERYTHING):
            for listener in self._listeners:
                listener()
        if kind == EVERYTHING:
            self._seen.update((REQUEUE, ABORT))
        elif kind in (REQUEUE, ABORT):
            self._seen.add(kind)
        if kind != WEBHOOK:
            self._event.set()

    def set(self) -> None:
        """Wake the worker from within the process (a slot freed): a poll follows."""
        self._seen.add(POLL)
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
                        subscribed = message["type"] != "message"
                        data = message["data"]
                        text = data.decode() if isinstance(data, bytes) else str(data)
                        kind, _, job_id = text.partition(" ")
                        self._received(EVERYTHING if subscribed or not kind else kind, job_id)
            except (RedisError, OSError) as exc:
                log.debug("wakeups_lost", error=type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESUBSCRIBE_S)
