"""One Redis subscription per API process, fanned out to in-process listeners by job id.

In the spirit of saq's multiplexer: a single reader task holds the only ``SUBSCRIBE
sq:events`` connection and hands each message to the listeners of that job. Listeners are
bounded and never block the reader: one that falls behind is emptied and told to resync
from the job's stream, which holds everything it missed. After the reader loses Redis it
reconnects with backoff, and on every (re)subscription tells all listeners to resync, since
whatever was published while it was away reached nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from types import TracebackType

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from backend.aio import cancel_and_wait
from backend.progress.events import JobEvent, parse_message
from backend.retry.backoff import backoff_s
from backend.store import keys

log = structlog.get_logger(__name__)


class Signal(enum.Enum):
    RESYNC = "resync"  # events may have been missed: re-read the stream
    CLOSED = "closed"  # the hub is stopping: end the stream


Item = JobEvent | Signal


class Listener:
    """One open stream's inbox. ``with hub.listen(job_id) as inbox: await inbox.get()``."""

    def __init__(self, hub: EventHub, job_id: str, maxsize: int) -> None:
        self.job_id = job_id
        self.overflows = 0
        self._hub = hub
        self._maxsize = maxsize
        self._items: deque[Item] = deque()
        self._ready = asyncio.Event()

    def deliver(self, item: Item) -> None:
        """Called by the hub; never blocks. Overflow drops the backlog for one RESYNC."""
        if len(self._items) >= self._maxsize:
            self._items.clear()
            self.overflows += 1
            item = Signal.RESYNC
            log.info("sse_listener_overflowed", job_id=self.job_id, overflows=self.overflows)
        self._items.append(item)
        self._ready.set()

    async def get(self) -> Item:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        self._hub.remove(self)

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventHub:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        channel: str = keys.EVENTS_CHANNEL,
        queue_size: int = 64,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        poll_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._queue_size = queue_size
        self._backoff = (backoff_base_s, backoff_max_s)
        self._poll_s = poll_s
        self._listeners: dict[str, set[Listener]] = {}
        self._count = 0  # kept, not summed: other threads (tests, metrics) may read it
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.subscriptions = 0  # 1 after the first subscribe, +1 per reconnection

    @property
    def listener_count(self) -> int:
        return self._count

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def wait_subscribed(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        return self.subscribed

    def listen(self, job_id: str) -> Listener:
        """Register a listener now: events published from here on reach it (or a RESYNC)."""
        listener = Listener(self, job_id, self._queue_size)
        self._listeners.setdefault(job_id, set()).add(listener)
        self._count += 1
        return listener

    def remove(self, listener: Listener) -> None:
        group = self._listeners.get(listener.job_id)
        if group is not None and listener in group:
            group.remove(listener)
            self._count -= 1
            if not group:
                del self._listeners[listener.job_id]

    def dispatch(self, event: JobEvent) -> None:
        for listener in tuple(self._listeners.get(event.job_id, ())):
            listener.deliver(event)

    def _broadcast(self, signal: Signal) -> None:
        for group in tuple(self._listeners.values()):
            for listener in tuple(group):
                listener.deliver(signal)

    async def start(self) -> None:
        """Start the reader; it keeps trying until Redis answers, so a down Redis is no error."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._subscribed.clear()
        self._broadcast(Signal.CLOSED)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._consume()
            except Exception as exc:  # the reader must outlive anything, or every stream stalls
                was_subscribed = self.subscribed
                self._subscribed.clear()
                failures = 1 if was_subscribed else failures + 1
                base_s, max_s = self._backoff
                delay = backoff_s(min(failures, 30), base_s=base_s, max_s=max_s, jitter=0.1)
                report = log.warning if isinstance(exc, RedisError | OSError) else log.exception
                report("event_hub_disconnected", error=type(exc).__name__,
                       retry_in_s=round(delay, 2))  # fmt: skip
                await asyncio.sleep(delay)

    async def _consume(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            while True:
                message = await pubsub.get_message(timeout=self._poll_s)
                if message is None:
                    continue
                if message["type"] == "message":
                    self._on_message(message["data"])
                elif message["type"] == "subscribe":
                    self._on_subscribed()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped

    def _on_message(self, payload: bytes) -> None:
        # Every replica hears every job's events; most have no listener here, so look the
        # job up before parsing the rest.
        job_id = payload[: payload.find(b" ")].decode(errors="replace")
        if job_id in self._listeners and (event := parse_message(payload)) is not None:
            self.dispatch(event)

    def _on_subscribed(self) -> None:
        self.subscriptions += 1
        self._subscribed.set()
        log.info("event_hub_subscribed", channel=self._channel, listeners=self.listener_count)
        self._broadcast(Signal.RESYNC)
