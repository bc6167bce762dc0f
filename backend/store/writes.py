"""The values the job store's writes take and return: who may write (``Guard``), how a write
ended (``Written``, ``AdmitCode``), and what admission, placing and requeueing answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

EVENTS_MAXLEN = 100  # entries a job's event stream keeps


def compact_json(value: Any) -> str:
    """JSON as the scripts read it: no spaces."""
    return json.dumps(value, separators=(",", ":"))


class AdmitCode(IntEnum):
    ADMITTED = 1
    DEDUPLICATED = 2
    QUEUE_FULL = -1
    USER_LIMIT = -2
    NOT_FOUND = -4
    QUOTA_EXCEEDED = -5


@dataclass(frozen=True)
class Admission:
    code: AdmitCode
    job_id: str
    inflight: int
    position: int | None = None  # the new job's place, when admitted
    estimated_wait_s: float | None = None


@dataclass(frozen=True)
class HitWrite:
    """A cache hit's finished job, ready to be written by the caller's look-up
    (``resolveSubmit``) once it knows the user: the record's fields without ``user``."""

    job_id: str
    created_ms: int
    fields_json: str
    view_json: str
    keep_s: int


@dataclass(frozen=True)
class PlaceRules:
    """When a waiting job's new place is worth an event (``announcePositions-2.lua``)."""

    min_wait_change_s: float  # a wait must move by both of these ...
    min_wait_change_ratio: float  # ... (a fraction of the announced wait)
    every_move_up_to: int  # every move within these first places is announced
    min_move_ratio: float  # further back, a move of this fraction of the announced place
    max_events: int  # per walk, spent from the head of the queue


@dataclass(frozen=True)
class Announcement:
    waiting: int  # jobs queued, walked in order
    announced: int  # of them, how many got a new place event


@dataclass(frozen=True)
class DeadLetter:
    entry: dict[str, Any]
    retention_s: int
    max_entries: int = 10_000  # beyond it the oldest entries are dropped (SPRITEQ_JOBS__DLQ_MAX)


class Guard(str):
    """Who may write a job: ``Guard.fence(token)`` for a runner, ``Guard.rev(n)`` for a
    compare-and-set on a read (``lua/include/guard.lua``)."""

    @classmethod
    def fence(cls, token: str) -> Guard:
        return cls(f"fence:{token}")

    @classmethod
    def rev(cls, rev: int) -> Guard:
        return cls(f"rev:{rev}")


class Written(IntEnum):
    """How a guarded write ended."""

    APPLIED = 1
    FINAL = 0  # the job is already final (or gone): nothing to do
    STALE = -1  # the guard failed: a runner is fenced out, or the record changed since read
    UNREPLICATED = 2  # applied, but no replica acknowledged it in time (see start_attempt)
    # start_attempt only: nothing written, for want of a PixelLab call permit
    NO_PERMIT = -2  # every permit is held
    PAUSED = -3  # PixelLab calls are paused (a 401 or 402)


@dataclass(frozen=True)
class Requeued:
    position: int
    estimated_wait_s: float
