"""The submit side of the queue: cache look-up, then one atomic admit-and-enqueue.

This is the only module that knows how arq lays out a job (``serialize_job``): the admit
script writes arq's job key and queue entry itself, in the same step that takes the slot.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

import structlog
from arq.jobs import serialize_job

from backend import metrics
from backend.cache import CachedImage, ImageInfo
from backend.config import Settings
from backend.errors import (
    InvalidRequest,
    NotFound,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    UserLimit,
)
from backend.models import (
    FrameSize,
    GenerationRequest,
    JobRecord,
    JobStatus,
    JobView,
    ResultInfo,
    Stage,
)
from backend.normalize import cache_key, canonical_fields
from backend.operations import image_items
from backend.options import WebhookView
from backend.queue.inputs import InputResolver
from backend.queue.resources import Resources
from backend.queue.serializer import serialize
from backend.store import keys
from backend.store.jobs import AdmitCode, record_from
from backend.store.quotas import RateCheck, Screened, SubmitRate, seconds_to_utc_midnight
from backend.store.writes import HitWrite, compact_json

log = structlog.get_logger(__name__)

TASK_NAME = "generate_sprite"
ARQ_EXPIRES_MS = 24 * 3600 * 1000


MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Submission:
    view: JobView
    created: bool  # False when deduplicated


@dataclass(frozen=True)
class CacheLook:
    """A plain submission's look into L1, made before its caller is known: its job record
    (``user`` still empty), and for a hit, the finished job the caller's round trip writes."""

    record: JobRecord
    image: ImageInfo | None = None
    done: JobRecord | None = None  # the record finished with ``image``
    write: HitWrite | None = None  # ``done`` as ``resolveSubmit`` writes it


@dataclass(frozen=True)
class GroupSubmission:
    group_id: str
    views: list[JobView]


def result_info(job_id: str, image: CachedImage | ImageInfo) -> ResultInfo:
    return ResultInfo(
        url=f"/v1/jobs/{job_id}/result",
        width=image.width,
        height=image.height,
        content_type=image.content_type,
        sha256=image.sha256,
        size=image.size,
        frames=image.frames,
        frame_size=FrameSize(width=image.frame_width, height=image.height),
    )


class Producer:
    def __init__(self, resources: Resources) -> None:
        self._res = resources
        self._settings: Settings = resources.settings
        self._inputs = InputResolver(resources.jobs, resources.cache, resources.inputs)
        self._rate = SubmitRate(
            resources.scripts, per_minute=resources.settings.limits.submits_per_minute
        )

    @property
    def rate(self) -> SubmitRate:
        return self._rate

    def screen_key(self, request: GenerationRequest) -> str | None:
        """The dedup key of ``request`` with its user written ``{user}``, when it can be
        read with the caller's look-up (no input images: the cache key is known at once)."""
        if next(image_items(request), None) is not None:
            return None
        return keys.dedup("{user}", cache_key(request))

    async def check_rate(self, user: str) -> None:
        """Count one submission against the user's rate; raises ``RateLimited`` (and then
        writes nothing to Redis) when they are over it."""
        self._refuse_over_rate(await self._rate.check(user))

    def _refuse_over_rate(self, check: RateCheck) -> None:
        if not check.admitted:
            metrics.JOBS_SUBMITTED.labels("rate_limited").inc()
            per_minute = self._settings.limits.submits_per_minute
            raise RateLimited(
                f"more than {per_minute} submissions a minute; slow down",
                retry_after_s=check.retry_after_s,
            )

    def new_record(
        self,
        user: str,
        request: GenerationRequest,
        request_id: str | None,
        group_id: str | None = None,
    ) -> JobRecord:
        return JobRecord(
            job_id=uuid.uuid4().hex,
            user=user,
            cache_key=cache_key(request),
            request=canonical_fields(request),
            timeout_s=request.timeout_s or self._settings.jobs.timeout_s,
            status=JobStatus.QUEUED,
            stage=Stage.QUEUED,
            progress=0,
            created_at=time.time(),
            request_id=request_id,
            priority=request.priority,
            callback_url=request.callback_url,
            group_id=group_id,
        )

    async def look_up(self, request: GenerationRequest, request_id: str | None) -> CacheLook:
        """Look for a plain ``request``'s sprite in L1 before the caller's round trip, so a
        hit is served in it (``resolveSubmit``): two round trips in all. Nothing is counted
        or written here: the caller may yet be unknown, over their rate or deduplicated."""
        record = self.new_record("", request, request_id)
        image = await self._res.cache.peek(record.cache_key)
        if image is None:
            return CacheLook(record)
        done = self._served(record, image)
        fields = done.to_fields()
        del fields["user"]  # the script fills it in once it knows the caller
        write = HitWrite(
            job_id=done.job_id,
            created_ms=int(done.created_at * 1000),
            fields_json=compact_json(fields),
            view_json=done.view().model_dump_json(),
            keep_s=self._settings.jobs.keep_finished_s,
        )
        return CacheLook(record, image, done, write)

    async def submit(
        self,
        user: str,
        request: GenerationRequest,
        *,
        request_id: str | None = None,
        screened: Screened | None = None,
        look: CacheLook | None = None,
    ) -> Submission:
        """Answer from the cache, or admit and enqueue.

        ``screened``: the rate verdict and dedup read already made for a plain request with
        the caller's look-up (``TokenStore.resolve_for_submit``), so not made again; with
        ``look``, the L1 look made before it (``look_up``), and whether that round trip
        already wrote the hit as this request's job.
        Raises RateLimited (before any look-up), QuotaExceeded, UserLimit or QueueFull; for
        input images, NotFound or InvalidRequest (``queue.inputs``).
        """
        # The dedup window comes before the cache, so a resubmission within it is the same
        # job even when that job has finished and its result is already cached. (A plain
        # request's L1 look comes first only so that the caller's round trip, which honours
        # the window, can serve a hit.) The admit script checks the window again atomically.
        read: dict[bytes, bytes] | None = None  # the duplicate's record, when already read
        if next(image_items(request), None) is not None:
            # Inputs are resolved (and stored) only once the rate allows the submission.
            await self.check_rate(user)
            request = await self._inputs.resolve(request, user)
            record = self.new_record(user, request, request_id)
            duplicate = await self._res.jobs.recent_duplicate(user, record.cache_key)
        else:
            # No inputs: the key is known at once, so the rate and the dedup window are one
            # round trip (the read is harmless when the rate refuses).
            if look is None:
                record = self.new_record(user, request, request_id)
            else:
                record = look.record.model_copy(update={"user": user})
            if screened is None:
                dedup_key = keys.dedup(user, record.cache_key)
                screened = await self._rate.check_and_get(user, dedup_key)
            self._refuse_over_rate(screened.check)
            if screened.served:
                assert look is not None and look.done is not None and look.image is not None
                done = look.done.model_copy(update={"user": user})
                return Submission(self._answered(done, image=look.image), created=True)
            duplicate = None if screened.duplicate is None else screened.duplicate.decode()
            read = screened.duplicate_fields  # the duplicate's record, read with the caller
        if duplicate is not None:
            if read is None:
                view = await self.view(duplicate, deduplicated=True)
            else:  # None when it finished and expired since
                found = record_from(read)
                view = None if found is None else found.view(deduplicated=True)
            # A cancelled or failed job would never give this request its sprite.
            if view is not None and view.status not in (JobStatus.CANCELLED, JobStatus.FAILED):
                metrics.JOBS_SUBMITTED.labels("deduplicated").inc()
                return Submission(view, created=False)
        return await self._answer_or_enqueue(record, look)

    async def _answer_or_enqueue(self, record: JobRecord, look: CacheLook | None) -> Submission:
        """The sprite from L1 (already looked at when ``look`` is given) or L2, as a
        finished job; otherwise ``record`` admitted and enqueued."""
        cache = self._res.cache
        image = await cache.peek(record.cache_key) if look is None else look.image
        if image is not None:
            done = await self._record_served(record, image)
            return Submission(self._answered(done, image=image), created=True)
        image = await cache.describe_from_l2(record.cache_key)  # counted in L2
        if image is not None:
            done = await self._record_served(record, image)
            return Submission(self._answered(done), created=True)
        return await self.enqueue(record, missed_cache=True)

    async def enqueue(
        self, record: JobRecord, *, from_dlq: bool = False, missed_cache: bool = False
    ) -> Submission:
        limits = self._settings.limits
        payload = self._payload(record)
        rates = await self._res.estimates.rates()
        admission = await self._res.jobs.admit(
            record,
            arq_payload=payload,
            arq_expires_ms=ARQ_EXPIRES_MS,
            dedup_window_ms=0 if from_dlq else int(limits.dedup_window_s * 1000),
            per_user=0 if from_dlq else limits.per_user,
            capacity=limits.queue_capacity,
            slots=rates.slots,
            median_duration_s=rates.median_duration_s,
            from_dlq=from_dlq,
            keep_s=self._settings.jobs.keep_finished_s,
            # An admin's DLQ retry is not charged to the user's quota.
            daily_quota=0 if from_dlq else limits.daily_generations,
            count_cache_miss=missed_cache,
        )
        code = admission.code
        await self._refuse(code, record.user)
        if code is AdmitCode.NOT_FOUND:
            raise NotFound("no such dead-letter entry")
        deduplicated = code is AdmitCode.DEDUPLICATED
        metrics.JOBS_SUBMITTED.labels("deduplicated" if deduplicated else "accepted").inc()
        if deduplicated:
            existing = await self.view(admission.job_id, deduplicated=True)
            if existing is None:  # finished and expired between the admit and this read
                raise NotFound("job not found")
            return Submission(existing, created=False)
        # The admit script wrote exactly ``record`` and its place: no need to read it back.
        placed = record.model_copy(
            update={"position": admission.position, "estimated_wait_s": admission.estimated_wait_s}
        )
        log.info("job_enqueued", job_id=record.job_id, position=admission.position, cache="miss")
        return Submission(placed.view(), created=True)

    async def _refuse(self, code: AdmitCode, user: str) -> None:
        """Raise the refusal an admission's ``code`` means, if it is one: QuotaExceeded,
        QueueFull or UserLimit, each with its Retry-After."""
        limits = self._settings.limits
        if code is AdmitCode.QUOTA_EXCEEDED:
            metrics.JOBS_SUBMITTED.labels("quota_exceeded").inc()
            raise QuotaExceeded(
                f"the daily quota of {limits.daily_generations} generations is used up; "
                "it resets at midnight UTC",
                retry_after_s=seconds_to_utc_midnight(time.time()),
            )
        if code is AdmitCode.QUEUE_FULL:
            metrics.JOBS_SUBMITTED.labels("queue_full").inc()
            retry = await self._res.estimates.retry_after_s(user_limit=False)
            raise QueueFull("the queue is full; try again later", retry_after_s=retry)
        if code is AdmitCode.USER_LIMIT:
            metrics.JOBS_SUBMITTED.labels("user_limit").inc()
            retry = await self._res.estimates.retry_after_s(user_limit=True, user=user)
            raise UserLimit(
                f"you already have {limits.per_user} jobs queued or running",
                retry_after_s=retry,
            )

    async def submit_group(
        self, user: str, request: GenerationRequest, *, request_id: str | None = None
    ) -> GroupSubmission:
        """``request.variants`` jobs with consecutive seeds (from ``seed``, or a random one),
        admitted all or none (``admitGroup``). No dedup window and no cache look-up: each
        variant is a job of its own (a variant already drawn costs no call, as the worker
        finds it in the cache). Raises what ``submit`` raises, and InvalidRequest when the
        seeds would pass 2**32 - 1.
        """
        count = request.variants
        seed: int | None = getattr(request, "seed", None)
        base = seed if seed is not None else random.randint(0, MAX_SEED - count + 1)
        if base + count - 1 > MAX_SEED:
            reason = f"with {count} variants, seed may be at most {MAX_SEED - count + 1}"
            raise InvalidRequest(f"seed: {reason}", details=[{"field": "seed", "reason": reason}])
        await self.check_rate(user)
        if next(image_items(request), None) is not None:
            request = await self._inputs.resolve(request, user)
        group_id = uuid.uuid4().hex
        records = [
            self.new_record(
                user, request.model_copy(update={"seed": base + i}), request_id, group_id
            )
            for i in range(count)
        ]
        limits = self._settings.limits
        rates = await self._res.estimates.rates()
        admission = await self._res.submissions.admit_group(
            group_id,
            records,
            [self._payload(record) for record in records],
            arq_expires_ms=ARQ_EXPIRES_MS,
            per_user=limits.per_user,
            capacity=limits.queue_capacity,
            slots=rates.slots,
            median_duration_s=rates.median_duration_s,
            keep_s=self._settings.jobs.keep_finished_s,
            daily_quota=limits.daily_generations,
        )
        await self._refuse(admission.code, user)
        metrics.JOBS_SUBMITTED.labels("accepted").inc(count)
        views = [
            record.model_copy(update={"position": position, "estimated_wait_s": wait}).view()
            for record, (position, wait) in zip(records, admission.places, strict=True)
        ]
        log.info("group_enqueued", group_id=group_id, jobs=count, cache="miss")
        return GroupSubmission(group_id, views)

    @staticmethod
    def _payload(record: JobRecord) -> bytes:
        """arq's own serialized job, written by the admit scripts."""
        payload: bytes = serialize_job(
            TASK_NAME, (record.job_id,), {}, None, int(record.created_at * 1000),
            serializer=serialize,
        )  # fmt: skip
        return payload

    @staticmethod
    def _served(record: JobRecord, image: ImageInfo) -> JobRecord:
        """``record`` finished at once with the cached ``image`` (its webhook, if it has a
        ``callback_url``, due now)."""
        now = time.time()
        done = record.finished_as(
            JobStatus.COMPLETED,
            at=now,
            cached=True,
            started_at=now,
            result=result_info(record.job_id, image),
        )
        return done.model_copy(update={"webhook": WebhookView()}) if done.callback_url else done

    async def _record_served(self, record: JobRecord, image: ImageInfo) -> JobRecord:
        done = self._served(record, image)
        keep_s = self._settings.jobs.keep_finished_s
        await self._res.submissions.record_finished(done, keep_s=keep_s)
        return done

    def _answered(self, done: JobRecord, *, image: ImageInfo | None = None) -> JobView:
        """Count a hit that answered ``done``'s request (written by now): ``image`` when
        it came from L1, whose hits are counted here (L2 counts its own as it reads)."""
        if image is not None:
            self._res.cache.count_hit(image.key)
        metrics.JOBS_SUBMITTED.labels("cache_hit").inc()
        log.info("job_served_from_cache", job_id=done.job_id, cache="hit",
                 layer="l2" if image is None else "l1")  # fmt: skip
        return done.view()

    async def view(self, job_id: str, *, deduplicated: bool = False) -> JobView | None:
        """The job as clients see it (a queued job's record holds its place)."""
        record = await self._res.jobs.get(job_id)
        if record is None:
            return None
        return record.view(deduplicated=deduplicated)
