"""``GET /v1/jobs/{id}/events``: a job's progress as Server-Sent Events, resumable by id."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from backend import metrics
from backend.api.ownership import caller_and_job
from backend.errors import InvalidRequest
from backend.progress.events import StreamId, parse_optional
from backend.progress.feed import ProgressFeed
from backend.progress.stream import JobStream
from backend.queue.resources import Resources

log = structlog.get_logger(__name__)

RETRY_MS = 2000  # EventSource's reconnect delay after a dropped connection
SEND_TIMEOUT_S = 30.0  # a client that reads nothing for this long is dropped
CLEANUP_TIMEOUT_S = 5.0
MAX_CLOCK_AHEAD_MS = 24 * 3600 * 1000  # a resume id this far past our clock is not an id of ours


def _resume_point(request: Request) -> StreamId | None:
    """``Last-Event-ID`` (EventSource's reconnect), else ``?last_event_id=``; raises 422."""
    field = "Last-Event-ID"
    raw = request.headers.get("last-event-id")
    if raw is None:
        field, raw = "last_event_id", request.query_params.get("last_event_id")
    reason = "must be an event id from this stream, like 1700000000000-0"
    try:
        after = parse_optional(raw)
    except ValueError:
        after = None
    else:
        # Ids are stamped with Redis's clock: one far in the future is not from this stream
        # (and the largest ids break Redis's exclusive ranges).
        if after is None or after.ms <= time.time() * 1000 + MAX_CLOCK_AHEAD_MS:
            return after
    raise InvalidRequest(f"{field}: {reason}", details=[{"field": field, "reason": reason}])


async def _frames(stream: JobStream) -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(retry=RETRY_MS)
    async for event in stream.events():
        yield ServerSentEvent(event.data, event=event.event, id=str(event.id))


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping")


class _ProgressResponse(EventSourceResponse):
    """An SSE response that gives back its listener and slot however it ends."""

    def __init__(
        self, stream: JobStream, *, ping_s: float, on_close: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(
            _frames(stream),
            ping=ping_s,
            ping_message_factory=_ping,
            send_timeout=SEND_TIMEOUT_S,
            cleanup_timeout=CLEANUP_TIMEOUT_S,
        )
        self._stream = stream
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.SSE_CONNECTIONS.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            metrics.SSE_CONNECTIONS.dec()
            self._stream.close()
            # Shielded: a cancelled request (disconnect, shutdown) must still free its slot.
            with anyio.move_on_after(CLEANUP_TIMEOUT_S, shield=True):
                await self._on_close()
            log.debug("sse_stream_closed", job_id=self._stream.job_id)


async def job_events(request: Request) -> Response:
    who, record = await caller_and_job(request)
    structlog.contextvars.bind_contextvars(job_id=record.job_id)
    after = _resume_point(request)
    if request.method == "HEAD":  # headers only, like sse-starlette's HEAD: nothing to hold
        return Response(media_type="text/event-stream", headers={"Cache-Control": "no-store"})
    feed: ProgressFeed = request.app.state.progress
    stream = await feed.open(record, after)
    if stream is None:
        # The client already has the final event; 204 tells EventSource not to reconnect.
        return Response(status_code=204)
    try:
        lease = await feed.slots.acquire(who.user)
    except BaseException:
        stream.close()
        raise
    resources: Resources = request.app.state.resources
    log.debug("sse_stream_opened", job_id=record.job_id, resume=str(after) if after else None)
    return _ProgressResponse(
        stream,
        ping_s=resources.settings.sse.ping_s,
        on_close=lambda: feed.slots.release(lease),
    )


routes = [Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"])]
