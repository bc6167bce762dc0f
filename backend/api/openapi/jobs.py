"""Operations of ``/v1/jobs``: submit, list, poll, cancel, fetch the sprite."""

from __future__ import annotations

import copy

from backend.api.openapi.components import (
    JOB_LINKS,
    JSON,
    Schemas,
    error,
    header,
    links,
    parameter,
    response,
)
from backend.api.schemas import GroupView, JobList, JobRequestBody
from backend.config import Settings
from backend.errors import (
    AlreadyFinished,
    BadRequest,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    Unavailable,
    UnsupportedMediaType,
    UserLimit,
)
from backend.models import JobView

JOB_NOT_FOUND = "No such job, or another user's job (the two look the same)."


def _submit(schemas: Schemas, settings: Settings) -> JSON:
    limits = settings.limits
    accepted = {"headers": {"Location": header("Location")}, "links": links("/job_id", *JOB_LINKS)}
    return {
        "operationId": "submitJob",
        "tags": ["jobs"],
        "summary": "Submit a sprite generation request",
        "description": (
            "Validated with PixelLab's own limits, so a request PixelLab would reject is a 422 "
            "here. The same user sending the same request again within "
            f"{limits.dedup_window_s:g} s gets the same job back (`deduplicated: true`). "
            f"`timeout_s` may be at most {settings.jobs.timeout_s:g}. `operation` picks "
            "the PixelLab call (default `pixflux`). Rules JSON Schema cannot state: pixflux's "
            "area, `width * height`, must be from 32x32 to 400x400 pixels (bitforge's from "
            "32x32); rotate and animate_with_skeleton take squares only; every input image "
            "but `color_image` and `style_image` must have the job's `image_size`. An image "
            'is `{"type": "base64", "base64": ...}` (a PNG) or `{"type": "job", "job_id": '
            '..., "frame": n}`, one of your own completed jobs (another user\'s is a 404). '
            "`priority` (low, normal, high) orders the queue; a job moves up one level each "
            f"{settings.jobs.priority_aging_s:g} s it waits. `callback_url` receives the job's "
            "final state, signed (`X-Spritequeue-Signature`). `variants` (1-4) makes that many "
            "jobs with consecutive seeds, admitted all or none, answered as a group."
        ),
        "requestBody": {
            "required": True,
            "description": (
                f"At most {limits.max_body_bytes} bytes of `application/json`, or "
                f"{limits.max_image_body_bytes} bytes when it carries base64 images."
            ),
            "content": {"application/json": {"schema": schemas.ref(JobRequestBody)}},
        },
        "responses": {
            "200": schemas.json(
                JobView,
                "Served from the cache: the job is already completed.",
                **copy.deepcopy(accepted),
            ),
            "202": {
                "description": (
                    "Queued, or the same job again (`deduplicated`); with `variants` > 1, the "
                    "group of jobs (`Location` is then the group's)."
                ),
                "content": {
                    "application/json": {
                        "schema": {"anyOf": [schemas.ref(JobView), schemas.ref(GroupView)]}
                    }
                },
                **copy.deepcopy(accepted),
            },
            "400": error("The body is not valid JSON.", BadRequest, schemas=schemas),
            "401": response("Unauthorized"),
            "403": error(
                "`priority: high` without a token made with `--priority high` (or an admin's).",
                Forbidden,
                schemas=schemas,
            ),
            "404": error(
                "An image input names a job that is not yours, or whose image has left the cache.",
                NotFound,
                schemas=schemas,
            ),
            "413": error(
                f"The body is larger than {limits.max_body_bytes} bytes (without images) "
                f"or {limits.max_image_body_bytes} bytes (with them).",
                PayloadTooLarge,
                schemas=schemas,
            ),
            "415": error(
                "The body is not `application/json`.", UnsupportedMediaType, schemas=schemas
            ),
            "422": error(
                "A field is invalid; `details` names each one and why. A `callback_url` that "
                "is not https, or whose host resolves to a private, loopback or link-local "
                "address (unless the operator allows it), is invalid too.",
                InvalidRequest,
                schemas=schemas,
            ),
            "429": error(
                f"You already have {limits.per_user} jobs queued or running, or fewer but not "
                "room for all the `variants` (`user_limit`: none is created); "
                f"you made more than {limits.submits_per_minute} submissions this minute, "
                "cache hits included (`rate_limited`: nothing was recorded); or you sent "
                f"{limits.daily_generations} jobs to PixelLab today (`quota_exceeded`: "
                "`Retry-After` is the next midnight UTC; cache hits stay free).",
                UserLimit,
                RateLimited,
                QuotaExceeded,
                schemas=schemas,
            ),
            "503": error(
                f"The queue is full ({limits.queue_capacity} jobs), or Redis is down.",
                QueueFull,
                Unavailable,
                schemas=schemas,
            ),
        },
    }


def _list(schemas: Schemas) -> JSON:
    return {
        "operationId": "listJobs",
        "tags": ["jobs"],
        "summary": "The caller's recent jobs, newest first",
        "parameters": [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
            },
        ],
        "responses": {
            "200": schemas.json(JobList, "The jobs.", links=links("/items/0/job_id", *JOB_LINKS)),
            "401": response("Unauthorized"),
            "422": error(
                "`limit` is not a whole number from 1 to 100.", InvalidRequest, schemas=schemas
            ),
            "503": response("Unavailable"),
        },
    }


def _status(schemas: Schemas) -> JSON:
    polled = {"ETag": header("ETag"), "X-Poll-Interval": header("X-Poll-Interval")}
    return {
        "operationId": "getJob",
        "tags": ["jobs"],
        "summary": "A job's status, for polling",
        "description": "Poll no sooner than `X-Poll-Interval` says; send the `ETag` back as "
        "`If-None-Match` to get an empty 304 while nothing changed. For live updates without "
        "polling, use the events stream.",
        "parameters": [
            parameter("JobId"),
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "The `ETag` of the last status you saw.",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": schemas.json(JobView, "The job's status.", headers=dict(polled)),
            "304": {
                "description": "Unchanged since the `If-None-Match` ETag.",
                "headers": dict(polled),
            },
            "401": response("Unauthorized"),
            "404": error(JOB_NOT_FOUND, NotFound, schemas=schemas),
            "503": response("Unavailable"),
        },
    }


def _cancel(schemas: Schemas) -> JSON:
    return {
        "operationId": "cancelJob",
        "tags": ["jobs"],
        "summary": "Cancel a queued or running job",
        "parameters": [parameter("JobId")],
        "responses": {
            "202": schemas.json(JobView, "Cancelled; the job's final state."),
            "401": response("Unauthorized"),
            "404": error(JOB_NOT_FOUND, NotFound, schemas=schemas),
            "409": error("The job has already finished.", AlreadyFinished, schemas=schemas),
            "503": response("Unavailable"),
        },
    }


def _result(schemas: Schemas) -> JSON:
    return {
        "operationId": "getJobResult",
        "tags": ["jobs"],
        "summary": "The generated sprite",
        "description": "The URL is also the `result.url` of a completed job. A multi-frame "
        "result is a horizontal sprite sheet (frames left to right, `result.frame_size` "
        "each); `?frame=N` gives one frame, `?format=gif` an animated preview.",
        "parameters": [
            parameter("JobId"),
            {
                "name": "frame",
                "in": "query",
                "required": False,
                "description": "One frame, from 0 (below `result.frames`).",
                "schema": {"type": "integer", "minimum": 0, "maximum": 99},
            },
            {
                "name": "format",
                "in": "query",
                "required": False,
                "description": "`png` (default) or `gif` (an animated preview).",
                "schema": {"type": "string", "enum": ["png", "gif"], "default": "png"},
            },
        ],
        "responses": {
            "200": {
                "description": "The PNG sheet or frame, or the GIF preview.",
                "headers": {"ETag": header("ETag")},
                "content": {
                    "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                    "image/gif": {"schema": {"type": "string", "contentMediaType": "image/gif"}},
                },
            },
            "401": response("Unauthorized"),
            "404": error(
                f"{JOB_NOT_FOUND} Or the sprite has expired from the cache: submit "
                "the request again.",
                NotFound,
                schemas=schemas,
            ),
            "409": error("The job has not completed: no sprite yet.", NotReady, schemas=schemas),
            "422": error(
                "`frame` is not a frame of this result, or `format` is not png or gif.",
                InvalidRequest,
                schemas=schemas,
            ),
            "503": response("Unavailable"),
        },
    }


def paths(schemas: Schemas, settings: Settings) -> JSON:
    return {
        "/v1/jobs": {"post": _submit(schemas, settings), "get": _list(schemas)},
        "/v1/jobs/{job_id}": {"get": _status(schemas), "delete": _cancel(schemas)},
        "/v1/jobs/{job_id}/result": {"get": _result(schemas)},
    }
