"""Job events: what the Lua scripts append to ``sq:events:{id}`` and publish on ``sq:events``.

``EventLog`` reads a job's stream, the durable half; ``parse_message`` decodes the pub/sub
half, ``"<job_id> <stream_id> <event> <data-json>"``, which the hub fans out. Stream ids are
``(ms, seq)`` tuples, so "already delivered?" is a tuple comparison (as text, 9 > 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from backend.models import JobRecord
from backend.store import keys

FINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})
_MAX_SEQ = 2**64 - 1  # ids are two unsigned 64-bit integers


class StreamId(NamedTuple):
    """A stream entry id, ``<ms>-<seq>``; compares in stream order (not as text: 9 < 10)."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str | bytes) -> StreamId:
        """``"1700000000000-3"`` (or just ``"1700000000000"``, seq 0); raises ``ValueError``."""
        raw = text.decode() if isinstance(text, bytes) else text
        ms, sep, seq = raw.strip().partition("-")
        if not _digits(ms) or (sep and not _digits(seq)):
            raise ValueError(f"not a stream id: {raw!r}")
        parsed = cls(int(ms), int(seq) if sep else 0)
        if parsed.ms > _MAX_SEQ or parsed.seq > _MAX_SEQ:
            raise ValueError(f"stream id out of range: {raw!r}")
        return parsed

    @classmethod
    def at_ms(cls, ms: int) -> StreamId:
        return cls(ms, 0)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_optional(text: str | None) -> StreamId | None:
    """A client's resume point: None for a missing or empty value; raises ``ValueError``."""
    if text is None or not text.strip():
        return None
    return StreamId.parse(text)


@dataclass(frozen=True, slots=True)
class JobEvent:
    job_id: str
    id: StreamId
    event: str  # progress | completed | failed | cancelled
    data: str  # the JobView as JSON, passed through untouched

    @property
    def final(self) -> bool:
        return self.event in FINAL_EVENTS


def parse_message(payload: bytes | str) -> JobEvent | None:
    """One pub/sub message, or None if it is not in the expected shape."""
    parts = _text(payload).split(" ", 3)
    if len(parts) != 4:
        return None
    job_id, stream_id, event, data = parts
    try:
        return JobEvent(job_id, StreamId.parse(stream_id), event, data)
    except ValueError:
        return None


def synthesized_final(record: JobRecord) -> JobEvent:
    """The final event of a finished job whose stream has expired, rebuilt from its record.

    Its id is the finish time (the real one was taken from Redis' clock at about that
    moment), so a client that resumes after it is told there is nothing more.
    """
    finished_ms = int((record.finished_at or record.created_at) * 1000)
    return JobEvent(
        record.job_id,
        StreamId.at_ms(finished_ms),
        record.status.value,
        record.view().model_dump_json(),
    )


class EventLog:
    """Reads the bounded per-job event streams the store's scripts write."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def read(
        self, job_id: str, after: StreamId | None
    ) -> tuple[list[JobEvent], JobEvent | None]:
        """Entries after ``after`` (all when None) and the stream's last entry, one round trip.

        Raises ``redis.RedisError`` when Redis is away (the HTTP edge turns it into 503).
        """
        key = keys.events(job_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(key, min="-" if after is None else f"({after}", max="+")
            pipe.xrevrange(key, max="+", min="-", count=1)
            entries, tail = await pipe.execute()
        events = [_entry(job_id, entry) for entry in entries]
        return events, (_entry(job_id, tail[0]) if tail else None)


def _entry(job_id: str, entry: tuple[bytes | str, dict[Any, Any]]) -> JobEvent:
    entry_id, fields = entry
    named = {_text(name): _text(value) for name, value in fields.items()}
    return JobEvent(job_id, StreamId.parse(entry_id), named.get("event", "progress"),
                    named.get("data", "{}"))  # fmt: skip


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
