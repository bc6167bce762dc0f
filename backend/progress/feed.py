"""What SSE needs in one API process, opened and closed by the app's lifespan."""

from __future__ import annotations

import redis.asyncio as aioredis

from backend.models import JobRecord
from backend.progress.events import EventLog, StreamId
from backend.progress.hub import EventHub
from backend.progress.slots import StreamSlots
from backend.progress.stream import JobStream, open_stream


class ProgressFeed:
    """The process's one event hub, the per-user stream slots and the event-stream reader."""

    def __init__(self, redis: aioredis.Redis, *, max_streams_per_user: int) -> None:
        self.hub = EventHub(redis)
        self.slots = StreamSlots(redis, limit=max_streams_per_user)
        self.log = EventLog(redis)

    async def start(self) -> None:
        await self.hub.start()
        await self.slots.start()

    async def stop(self) -> None:
        await self.slots.stop()
        await self.hub.stop()

    async def open(self, record: JobRecord, after: StreamId | None) -> JobStream | None:
        """See ``open_stream``; raises ``redis.RedisError`` when Redis is away."""
        return await open_stream(self.hub, self.log, record, after)
