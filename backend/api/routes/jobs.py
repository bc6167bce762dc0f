"""``/v1/jobs``: submit, poll, fetch the sprite, cancel, list."""

from __future__ import annotations

import hashlib
import time

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend import metrics, operations, sprites
from backend.api.auth import has_bearer, principal, principal_screened
from backend.api.body import carries_images, invalid_request, parse_json, read_body
from backend.api.ownership import caller_and_job
from backend.api.params import int_param
from backend.api.routes.groups import check_options, group_body
from backend.config import Settings
from backend.errors import (
    AlreadyFinished,
    Conflict,
    InvalidRequest,
    NotFound,
    NotReady,
    PayloadTooLarge,
    SpriteQueueError,
)
from backend.models import GenerationRequest, JobStatus, JobView
from backend.options import Priority
from backend.queue.producer import CacheLook, Producer
from backend.queue.resources import Resources
from backend.store.jobs import Guard, Written
from backend.store.quotas import Screened


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.resources.settings
    return settings


def _view_response(
    view: JobView, status: int, *, headers: dict[str, str] | None = None
) -> Response:
    return Response(view.model_dump_json(), status_code=status, media_type="application/json",
                    headers=headers)  # fmt: skip


async def submit(request: Request) -> Response:
    began = time.perf_counter()
    try:
        return await _submit(request)
    finally:  # refusals and errors are timed too
        metrics.SUBMIT_LATENCY.observe(time.perf_counter() - began)


async def _submit(request: Request) -> Response:
    if not has_bearer(request):
        await principal(request)  # 401 before the body is read
    settings = _settings(request)
    try:
        sprite = await _read_submission(request, settings)
        _check_timeout(sprite.timeout_s, settings)
    except SpriteQueueError:
        await principal(request)  # an unknown caller hears 401, not what is wrong with the body
        metrics.JOBS_SUBMITTED.labels("invalid").inc()
        raise
    producer: Producer = request.app.state.producer
    # A plain request (one job, no input images, no option that needs a check of the caller)
    # looks in L1 first, then learns who calls, counts its rate, reads its dedup window and,
    # for a hit, writes its answered job in one round trip: a cache hit is two in all.
    dedup_key = producer.screen_key(sprite) if _plain(sprite) else None
    screened: Screened | None = None
    look: CacheLook | None = None
    if dedup_key is None:
        who = await principal(request)
    else:
        look = await producer.look_up(sprite, request.state.request_id)
        who, screened = await principal_screened(request, producer.rate, dedup_key, look.write)
    await check_options(who, sprite, settings)
    if sprite.variants > 1:
        group = await producer.submit_group(who.user, sprite, request_id=request.state.request_id)
        return JSONResponse(group_body(group.group_id, group.views), status_code=202,
                            headers={"Location": f"/v1/groups/{group.group_id}"})  # fmt: skip
    submission = await producer.submit(
        who.user, sprite, request_id=request.state.request_id, screened=screened, look=look
    )
    view = submission.view
    status = 200 if view.cached and submission.created else 202
    return _view_response(view, status, headers={"Location": f"/v1/jobs/{view.job_id}"})


def _plain(sprite: GenerationRequest) -> bool:
    return sprite.variants == 1 and sprite.priority is not Priority.HIGH and not sprite.callback_url


async def _read_submission(request: Request, settings: Settings) -> GenerationRequest:
    """The body as the model of its ``operation``. Bodies with inline images may be up to
    ``max_image_body_bytes``, others ``max_body_bytes``; raises 413, 415, 400 or 422."""
    limits = settings.limits
    raw = await read_body(request, max_bytes=max(limits.max_image_body_bytes,
                                                 limits.max_body_bytes))  # fmt: skip
    # Over the small limit, the body must hold an image: a cheap look first, then its shape.
    large = len(raw) > limits.max_body_bytes
    if large and b'"base64"' not in raw:
        raise PayloadTooLarge(f"a body without images may be at most {limits.max_body_bytes} bytes")
    data = parse_json(raw)
    if large and not carries_images(data):
        raise PayloadTooLarge(f"a body without images may be at most {limits.max_body_bytes} bytes")
    try:
        return operations.parse(data)
    except ValidationError as exc:
        raise invalid_request(exc) from exc


def _check_timeout(timeout_s: float | None, settings: Settings) -> None:
    """A per-job timeout within [min_timeout_s, timeout_s]; raises ``InvalidRequest``."""
    low, high = settings.jobs.min_timeout_s, settings.jobs.timeout_s
    if timeout_s is not None and not low <= timeout_s <= high:
        reason = f"must be from {low:g} to {high:g} seconds"
        raise InvalidRequest(
            f"timeout_s: {reason}", details=[{"field": "timeout_s", "reason": reason}]
        )


def poll_interval_s(view: JobView) -> float:
    """How soon a polling client should ask again."""
    if view.status.finished:
        return 0
    if view.status is JobStatus.ACTIVE:
        return 1.0
    return min(max((view.estimated_wait_s or 1.0) / 4, 1.0), 10.0)


async def status(request: Request) -> Response:
    _, record = await caller_and_job(request)
    view = record.view()  # a queued job's record holds its current place (limits.positions)
    body = view.model_dump_json()
    etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "X-Poll-Interval": f"{poll_interval_s(view):g}",
               "Cache-Control": "no-cache"}  # fmt: skip
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def result(request: Request) -> Response:
    _, record = await caller_and_job(request)
    frame = _frame_param(request)
    as_gif = _format_param(request) == "gif"
    if record.status is not JobStatus.COMPLETED:
        raise NotReady(f"the job is {record.status.value}; no sprite yet")
    resources: Resources = request.app.state.resources
    image = await resources.cache.get(record.cache_key)
    if image is None:
        raise NotFound("the sprite is no longer stored; submit the request again")
    if frame is not None and frame >= image.frames:
        reason = f"the result has {image.frames} frame(s), numbered from 0"
        raise InvalidRequest(f"frame: {reason}", details=[{"field": "frame", "reason": reason}])
    body, media_type, variant = image.png, image.content_type, ""
    if frame is not None:
        body, variant = sprites.frame(image.png, frame, image.frames), f"-f{frame}"
    if as_gif:
        source = body if frame is not None else image.png
        body = sprites.gif(source, 1 if frame is not None else image.frames)
        media_type, variant = "image/gif", variant + "-gif"
    tag = hashlib.sha256((image.sha256 + variant).encode()).hexdigest() if variant else image.sha256
    headers = {"ETag": f'"{tag}"', "Cache-Control": "private, max-age=86400"}
    return Response(body, media_type=media_type, headers=headers)


def _frame_param(request: Request) -> int | None:
    if request.query_params.get("frame") in (None, ""):
        return None
    return int_param(request, "frame", default=0, low=0, high=99)


def _format_param(request: Request) -> str:
    value = request.query_params.get("format") or "png"
    if value not in ("png", "gif"):
        reason = "must be png (the sheet or frame) or gif (an animated preview)"
        raise InvalidRequest(f"format: {reason}", details=[{"field": "format", "reason": reason}])
    return value


CANCEL_TRIES = 5


async def cancel(request: Request) -> Response:
    """Cancel a queued or running job in one step (``finishJob``, a compare-and-set on the
    record as read): a job started meanwhile is still cancelled and its call aborted, and
    nothing the worker wrote since the read is rolled back (the write is retried on a
    fresh read instead)."""
    _, record = await caller_and_job(request)
    resources: Resources = request.app.state.resources
    for _ in range(CANCEL_TRIES):
        done = record.finished_as(JobStatus.CANCELLED, at=time.time())
        written, status = await resources.jobs.finish(
            done, guard=Guard.rev(record.rev), keep_s=resources.settings.jobs.keep_finished_s
        )
        if written is Written.APPLIED:
            metrics.JOBS_FINISHED.labels("cancelled").inc()
            return _view_response(done.view(), 202)
        if written is Written.FINAL:
            raise AlreadyFinished(f"the job is already {status or 'gone'}")
        latest = await resources.jobs.get(record.job_id)
        if latest is None:
            raise NotFound("job not found")
        record = latest
    raise Conflict("the job is changing too fast to cancel; try again")


async def list_jobs(request: Request) -> Response:
    who = await principal(request)
    resources: Resources = request.app.state.resources
    limit = int_param(request, "limit", default=50, low=1, high=100)
    items = []
    for job_id in await resources.jobs.user_job_ids(who.user, limit):
        record = await resources.jobs.get(job_id)
        if record is not None:
            items.append(record.view().model_dump(mode="json"))
    return JSONResponse({"items": items})


routes = [
    Route("/v1/jobs", submit, methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", status, methods=["GET"]),
    Route("/v1/jobs/{job_id}", cancel, methods=["DELETE"]),
    Route("/v1/jobs/{job_id}/result", result, methods=["GET"]),
]
