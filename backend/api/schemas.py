"""Response bodies with no model elsewhere (job lists, DLQ, stats, health, SSE frames)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Json, RootModel, model_validator

from backend.errors import ErrorType
from backend.models import Attempt, ErrorBody, ErrorInfo, JobView, QueueView
from backend.operations import JobRequest

# These describe bodies that routes build as dicts. They exist for the OpenAPI document and
# for the tests that validate real responses against it; a route changing its body without
# changing its model here fails those tests.


class JobRequestBody(RootModel[JobRequest]):
    """``POST /v1/jobs``: the fields of one ``operation`` (absent: ``pixflux``)."""


class JobList(BaseModel):
    """``GET /v1/jobs``: the caller's most recent jobs, newest first."""

    items: list[JobView]


class GroupView(BaseModel):
    """A submission's variants (``variants`` > 1): ``POST /v1/jobs`` (202) and
    ``GET /v1/groups/{group_id}``; the jobs in seed order."""

    group_id: str
    jobs: list[JobView]


class FieldProblem(BaseModel):
    field: str = Field(description="dotted path of the bad field, e.g. `image_size.width`")
    reason: str


class InvalidRequestDetail(ErrorBody.Detail):
    code: Literal["invalid_request"]
    details: list[FieldProblem]


class InvalidRequestBody(ErrorBody):
    """A ``422``: which fields were wrong, and why."""

    error: InvalidRequestDetail


class DlqEntry(BaseModel):
    """A dead-lettered job: its failure, its tries, and enough to run it again."""

    job_id: str
    user: str
    cache_key: str = Field(description="sha256 of the canonical request")
    request: dict[str, Any] = Field(
        description="the normalized submission: SpriteRequest fields, defaults left out"
    )
    timeout_s: float
    error: ErrorInfo | None
    attempts: int = Field(description="tries started, interrupted ones included")
    failures: int = Field(0, description="the job's own upstream failures (these spend retries)")
    stalls: int = Field(0, description="tries whose worker was lost (a separate cap)")
    history: list[Attempt]
    created_at: float
    request_id: str | None
    failed_at: float
    callback_url: str | None = Field(None, description="where its final state is delivered")
    group_id: str | None = Field(None, description="the variants it was submitted with")


class DlqPage(BaseModel):
    """``GET /v1/admin/dlq``: a page of entries, newest first."""

    items: list[DlqEntry]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class StatsQueue(QueueView):
    inflight: int
    warning_at: int


class WorkerBeat(BaseModel):
    # The heartbeat hash's other fields pass through as they are.
    model_config = ConfigDict(extra="allow")

    worker_id: str
    concurrency: int | None = None
    running: int | None = None
    pid: int | None = None
    beat_at: float | None = None
    age_s: float | None = None


class CacheStats(BaseModel):
    hits: int
    misses: int
    hit_rate: float | None


class DurationStats(BaseModel):
    samples: int
    p50: float | None
    p95: float | None


class DlqRetryFilter(BaseModel):
    """``POST /v1/admin/dlq/retry``: which entries to requeue; exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    error_type: ErrorType | None = Field(
        None, description="every entry whose job failed with this error type"
    )
    ids: list[str] | None = Field(
        None, min_length=1, max_length=1000, description="these entries (unknown ids are skipped)"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DlqRetryFilter:
        if (self.error_type is None) == (self.ids is None):
            raise ValueError("give exactly one of error_type and ids")
        return self


class DlqRetryResult(BaseModel):
    """What a bulk retry did: requeued oldest first, up to the queue's free capacity."""

    requeued: int = Field(description="entries requeued (each under its own job id)")
    remaining: int = Field(description="matching entries left in the DLQ: the queue filled up")
    job_ids: list[str] = Field(description="the requeued jobs, oldest dead letter first")


class AdminStats(BaseModel):
    """``GET /v1/admin/stats``: figures read from Redis, the same whichever replica answers."""

    queue: StatsQueue
    per_user_inflight: dict[str, int]
    workers_alive: int
    workers: list[WorkerBeat]
    dlq_size: int
    cache: CacheStats
    durations_s: DurationStats


class Liveness(BaseModel):
    status: Literal["ok"]


class ReadyCheck(BaseModel):
    # Each check adds its own figures (latency_ms, alive, layers…) beside its status.
    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "degraded", "down"]
    error: str | None = Field(None, description="the exception's type when the check failed")


class Readiness(BaseModel):
    """``GET /health/ready``: 503 unless Redis answers and a worker's heartbeat is fresh."""

    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, ReadyCheck]


class JobEvent(BaseModel):
    """One Server-Sent Event: its `event:`, `id:` and `data:` lines; `data` is a JobView as JSON."""

    # ``Json``: on the wire ``data`` is a JSON string; documented as contentMediaType plus
    # contentSchema, and parsed into a JobView when a test validates a real frame.
    event: Literal["progress", "completed", "failed", "cancelled"]
    id: str = Field(
        pattern=r"^\d+-\d+$",
        description="the stream id; send it back as `Last-Event-ID` to resume after it",
    )
    data: Json[JobView] = Field(description="the job's state after this event")
