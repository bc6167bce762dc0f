"""One SSE client's view of a job: replay from the stream, then live events, without gaps.

The order is what makes it race-free: the listener is registered with the hub *before* the
stream is read, so an event appended after the read is already on its way to the listener,
and one appended before it is in what was read. The overlap is removed by id: live events
at or below the last id delivered are skipped.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import structlog
from redis.exceptions import RedisError

from backend.models import JobRecord
from backend.progress.events import EventLog, JobEvent, StreamId, synthesized_final
from backend.progress.hub import EventHub, Listener, Signal
from backend.retry.backoff import backoff_s

log = structlog.get_logger(__name__)


class JobStream:
    """Iterate ``events()`` once; it ends after the job's final event (or when the hub stops)."""

    def __init__(
        self,
        listener: Listener,
        event_log: EventLog,
        last: StreamId | None,
        backlog: list[JobEvent],
    ) -> None:
        self.listener = listener
        self.last = last  # the id of the last event delivered (or the client's resume point)
        self._log = event_log
        self._backlog = backlog

    @property
    def job_id(self) -> str:
        return self.listener.job_id

    async def events(self) -> AsyncIterator[JobEvent]:
        pending, self._backlog = self._backlog, []
        while True:
            for event in pending:
                if self.last is not None and event.id <= self.last:
                    continue  # read from the stream and also published: already sent
                self.last = event.id
                yield event
                if event.final:
                    return
            item = await self.listener.get()
            if item is Signal.CLOSED:
                return
            pending = await self._resync() if item is Signal.RESYNC else [item]

    async def _resync(self) -> list[JobEvent]:
        """Everything after the last delivered id; waits out a Redis outage."""
        for attempt in itertools.count(1):
            try:
                events, _ = await self._log.read(self.job_id, self.last)
                return events
            except RedisError as exc:
                delay = backoff_s(min(attempt, 10), base_s=0.2, max_s=5.0, jitter=0.1)
                log.warning("sse_resync_failed", job_id=self.job_id, error=type(exc).__name__,
                            retry_in_s=round(delay, 2))  # fmt: skip
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.listener.close()


async def open_stream(
    hub: EventHub, event_log: EventLog, record: JobRecord, after: StreamId | None
) -> JobStream | None:
    """Register, then read; None when the client already has the final event.

    ``record`` was read before this call, so it only counts when it is final (a final job
    never changes again). A stream whose last entry is final is finished; a finished job
    whose stream has expired gets its final event rebuilt from the record. Raises
    ``redis.RedisError`` when Redis is away.
    """
    listener = hub.listen(record.job_id)
    try:
        backlog, tail = await event_log.read(record.job_id, after)
    except BaseException:
        listener.close()
        raise
    if tail is None and record.status.finished:
        tail = synthesized_final(record)
        backlog = [tail] if after is None or tail.id > after else []
    if not backlog and tail is not None and tail.final:
        listener.close()
        return None
    return JobStream(listener, event_log, after, backlog)
