"""Pydantic models shared across layers: the submission request, job state, job views, events."""

from __future__ import annotations

import json
import re
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backend.errors import ErrorType
from backend.inputs import ImageInput
from backend.options import Priority, SubmitOptions, WebhookView
from backend.queue_state import AdminUpstreamView as AdminUpstreamView  # moved; re-exported
from backend.queue_state import BalanceView as BalanceView
from backend.queue_state import QueueState as QueueState
from backend.queue_state import QueueView as QueueView
from backend.queue_state import UpstreamState as UpstreamState
from backend.queue_state import UpstreamView as UpstreamView

_WHITESPACE = re.compile(r"\s+")
# Control characters a prompt may not carry: all but tab and newline (CR only as CRLF).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")
# Invisible characters that change how a prompt reads (bidi overrides and isolates, marks,
# zero-width spaces and joiners, BOM) without changing the sprite: removed.
_INVISIBLE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")

MIN_SIDE, MAX_SIDE = 16, 400
MIN_AREA, MAX_AREA = 32 * 32, 400 * 400


class Outline(StrEnum):
    SINGLE_COLOR_BLACK = "single color black outline"
    SINGLE_COLOR = "single color outline"
    SELECTIVE = "selective outline"
    LINELESS = "lineless"


class Shading(StrEnum):
    FLAT = "flat shading"
    BASIC = "basic shading"
    MEDIUM = "medium shading"
    DETAILED = "detailed shading"
    HIGHLY_DETAILED = "highly detailed shading"


class Detail(StrEnum):
    LOW = "low detail"
    MEDIUM = "medium detail"
    HIGH = "highly detailed"


class View(StrEnum):
    SIDE = "side"
    LOW_TOP_DOWN = "low top-down"
    HIGH_TOP_DOWN = "high top-down"


class Direction(StrEnum):
    NORTH = "north"
    NORTH_EAST = "north-east"
    EAST = "east"
    SOUTH_EAST = "south-east"
    SOUTH = "south"
    SOUTH_WEST = "south-west"
    WEST = "west"
    NORTH_WEST = "north-west"


def collapse_whitespace(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip()


class ImageSize(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(ge=MIN_SIDE, le=MAX_SIDE, strict=True)
    height: int = Field(ge=MIN_SIDE, le=MAX_SIDE, strict=True)

    @model_validator(mode="after")
    def _area_within_limits(self) -> ImageSize:
        area = self.width * self.height
        if not MIN_AREA <= area <= MAX_AREA:
            raise ValueError(
                f"image area {area} px must be between {MIN_AREA} (32x32) and {MAX_AREA} (400x400)"
            )
        return self


class GenerationRequest(SubmitOptions):
    """What every operation's request shares: strict shapes, text and enum normalization, and
    our own ``timeout_s`` and queue options (``backend.options``).

    Validators normalize as they validate (whitespace collapsed, enums lower-cased), so a
    validated request is already in canonical shape; ``backend.normalize`` serialises it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Ours, not PixelLab's: per-job timeout, at most the configured maximum. Not part of the key.
    timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @field_validator("description", "action", mode="before", check_fields=False)
    @classmethod
    def _collapse(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if found := _CONTROL.search(value):
            raise ValueError(
                f"control character U+{ord(found[0][0]):04X} is not allowed "
                "(only newline and tab are)"
            )
        return collapse_whitespace(_INVISIBLE.sub("", value))

    @field_validator(
        "outline", "shading", "detail", "view", "direction", "from_view", "to_view",
        "from_direction", "to_direction", mode="before", check_fields=False,
    )  # fmt: skip
    @classmethod
    def _lower_enum(cls, value: Any) -> Any:
        return collapse_whitespace(value).lower() if isinstance(value, str) else value


Seed = Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)]
Strict = Annotated[bool, Field(strict=True)]
Strength = Annotated[int, Field(ge=1, le=999, strict=True)]


class SpriteRequest(GenerationRequest):
    """``operation: pixflux`` (the default): PixelLab's pixflux fields with its limits."""

    operation: Literal["pixflux"] = "pixflux"
    description: Annotated[str, Field(min_length=1, max_length=2000)]
    image_size: ImageSize
    seed: Seed | None = None
    outline: Outline | None = None
    shading: Shading | None = None
    detail: Detail | None = None
    view: View | None = None
    direction: Direction | None = None
    isometric: Strict = False
    no_background: Strict = False
    text_guidance_scale: Annotated[float, Field(ge=1, le=20)] = 8.0
    init_image: ImageInput | None = None
    init_image_strength: Strength = 300
    color_image: ImageInput | None = None


class JobStatus(StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class Stage(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    SUBMITTED = "submitted"
    RECEIVED = "received"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Progress(IntEnum):
    QUEUED = 0
    STARTED = 5
    SUBMITTED = 10
    RECEIVED = 90
    COMPLETED = 100


class ErrorInfo(BaseModel):
    type: ErrorType
    message: str
    retryable: bool


class Attempt(BaseModel):
    number: int
    started_at: float
    finished_at: float | None = None
    # stalled: its worker was lost (counts towards the stall cap); interrupted: stopped by us
    # (graceful shutdown, our store failing), requeued without spending a retry.
    outcome: (
        Literal["completed", "failed", "stalled", "interrupted", "cancelled", "requeued"] | None
    ) = None
    error: ErrorInfo | None = None


class FrameSize(BaseModel):
    width: int
    height: int


class ResultInfo(BaseModel):
    """The finished sprite: ``url`` serves the PNG (a horizontal sheet when ``frames`` > 1),
    ``width`` and ``height`` are the sheet's, ``frame_size`` one frame's."""

    url: str
    width: int
    height: int
    content_type: str = "image/png"
    sha256: str
    size: int
    frames: int = Field(1, description="Frames in the sheet, left to right (1: a still image).")
    frame_size: FrameSize | None = None

    @model_validator(mode="after")
    def _one_frame_by_default(self) -> ResultInfo:
        if self.frame_size is None:  # records written before frames existed
            self.frame_size = FrameSize(width=self.width // self.frames, height=self.height)
        return self


class JobView(BaseModel):
    """The job status body of ``GET /v1/jobs/{id}`` and the data of every SSE event.

    ``position`` and ``estimated_wait_s`` must stay the last two fields: the Lua scripts that
    place a waiting job (``lua/include/place.lua``) rewrite exactly that tail of the JSON.
    """

    job_id: str
    status: JobStatus
    progress: int
    stage: Stage
    operation: str = Field("pixflux", description="pixflux, bitforge, rotate, animate_with_text, "
                           "animate_with_skeleton or inpaint")  # fmt: skip
    description: str | None = None  # the (normalized) prompt, so clients can label the job
    attempts: int = 0
    cached: bool = False
    deduplicated: bool = False
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    result: ResultInfo | None = None
    priority: Priority = Priority.NORMAL
    group_id: str | None = None
    webhook: WebhookView | None = None
    position: int | None = Field(
        None, description="While queued: 1 = next to start. Refreshed about once a second."
    )
    estimated_wait_s: float | None = Field(
        None, description="While queued: seconds until it is likely to start."
    )


class ErrorBody(BaseModel):
    class Detail(BaseModel):
        code: str
        message: str
        details: Any = None

    error: Detail


_JSON_FIELDS = ("request", "history", "error", "result", "webhook")
_TEXT_FIELDS = ("fence", "worker")  # "" is a value there, not a missing one


class JobRecord(BaseModel):
    """A job as stored in its Redis hash (every field a string there)."""

    job_id: str
    user: str
    cache_key: str
    request: dict[str, Any]
    timeout_s: float
    status: JobStatus
    stage: Stage
    progress: int
    attempts: int = 0
    history: list[Attempt] = []
    cached: bool = False
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    result: ResultInfo | None = None
    request_id: str | None = None
    # Fencing (see backend.store.jobs): ``fence`` is the running attempt's token (the value of
    # its lease and flight lock too), ``worker`` the worker that runs it; ``rev`` counts the
    # record's writes, so a write built from a read is a compare-and-set.
    fence: str = ""
    worker: str = ""
    rev: int = 0
    # Retry budgets: ``failures`` counts the job's own upstream failures (they spend retries);
    # ``stalls`` counts attempts whose worker was lost (a separate cap).
    failures: int = 0
    stalls: int = 0
    # Seconds 429s have deferred this job in all (capped by pixellab.throttle_max_wait_s).
    throttled_s: float = 0.0
    priority: Priority = Priority.NORMAL  # an offset on its score in arq's queue
    group_id: str | None = None  # the variants it was submitted with (``store.groups``)
    callback_url: str | None = None
    webhook: WebhookView | None = None  # its delivery, once final (``queue.webhooks``)
    # Where a queued job waits, written by the scripts that place it (admitJob, and
    # announcePositions while it waits); cleared by every later change of state.
    position: int | None = None
    estimated_wait_s: float | None = None

    def to_fields(self, *names: str) -> dict[str, str]:
        """The named fields (all when none named) as Redis hash strings."""
        data = self.model_dump(mode="json")
        out: dict[str, str] = {}
        for name in names or tuple(data):
            value = data[name]
            if name in _JSON_FIELDS:
                out[name] = json.dumps(value, separators=(",", ":"))
            elif isinstance(value, bool):
                out[name] = "1" if value else "0"
            else:
                out[name] = "" if value is None else str(value)
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> JobRecord:
        data: dict[str, Any] = {}
        for name, value in fields.items():
            if name not in cls.model_fields:
                continue
            if name in _JSON_FIELDS:
                data[name] = json.loads(value) if value else None
            elif value == "" and name not in _TEXT_FIELDS:
                data[name] = None
            else:
                data[name] = value
        if data.get("cached") is not None:
            data["cached"] = data["cached"] == "1"
        if data.get("history") is None:
            data["history"] = []
        return cls.model_validate(data)

    def finished_as(self, status: JobStatus, *, at: float, **fields: Any) -> JobRecord:
        """This job in a final ``status`` at ``at``; ``fields`` are the rest of the update."""
        progress = 100 if status is JobStatus.COMPLETED else self.progress
        update = {"status": status, "stage": Stage(status.value), "progress": progress,
                  "finished_at": at}  # fmt: skip
        return self.model_copy(update={**update, **fields})

    def requeued(self, **fields: Any) -> JobRecord:
        """This job back in the queue (a retry or a shutdown): stage and progress reset."""
        update = {"status": JobStatus.QUEUED, "stage": Stage.QUEUED, "progress": 0,
                  "position": None, "estimated_wait_s": None}  # fmt: skip
        return self.model_copy(update={**update, **fields})

    def dead_letter_entry(self, failed_at: float) -> dict[str, Any]:
        """What the DLQ keeps: enough to show the failure and to run the job again."""
        entry = self.model_dump(
            mode="json",
            include={"job_id", "user", "cache_key", "request", "timeout_s", "error",
                     "attempts", "failures", "stalls", "history", "created_at",
                     "request_id", "callback_url", "group_id"},
        )  # fmt: skip
        entry["failed_at"] = failed_at
        return entry

    def view(self, **extra: Any) -> JobView:
        queued = self.status is JobStatus.QUEUED
        return JobView(
            job_id=self.job_id,
            operation=self.request.get("operation", "pixflux"),
            description=self.request.get("description"),
            status=self.status,
            progress=self.progress,
            stage=self.stage,
            attempts=self.attempts,
            cached=self.cached,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            error=self.error,
            result=self.result,
            priority=self.priority,
            group_id=self.group_id,
            webhook=self.webhook,
            position=self.position if queued else None,
            estimated_wait_s=self.estimated_wait_s if queued else None,
            **extra,
        )
