"""The error tree. Every error knows its HTTP status and its stable ``code``.

    SpriteQueueError                     code             status
    ├── BadRequest                       bad_json         400
    ├── Unauthorized                     unauthorized     401
    ├── Forbidden                        forbidden        403
    ├── NotFound                         not_found        404
    ├── Conflict                         conflict         409
    │   ├── NotReady                     not_ready        409
    │   └── AlreadyFinished              already_finished 409
    ├── PayloadTooLarge                  payload_too_large 413
    ├── UnsupportedMediaType             unsupported_media_type 415
    ├── InvalidRequest                   invalid_request  422  (details: [{field, reason}])
    ├── Rejected                         (carries retry_after_s)
    │   ├── UserLimit                    user_limit       429
    │   ├── TooManyStreams               too_many_streams 429
    │   ├── TooManyAuthFailures          too_many_auth_failures 429
    │   ├── RateLimited                  rate_limited     429  (the user's submits a minute)
    │   ├── QuotaExceeded                quota_exceeded   429  (the user's generations a day)
    │   └── QueueFull                    queue_full       503
    ├── Unavailable                      unavailable      503  (a dependency is down)
    ├── UpstreamError                    (worker side: PixelLab failed; carries ErrorType)
    ├── FencedOut                        (worker side: this attempt lost its job's fence)
    └── ConfigurationError               (a process refuses to start: a setting is unsafe)

Foreign exceptions (redis, httpx, google.api_core) are translated into this tree at the
module that talks to the foreign library, with ``raise ... from exc``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorType(StrEnum):
    """How a failed generation is classified; decides retry and dead-lettering."""

    NETWORK = "network"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    AUTH = "auth"
    INVALID_REQUEST = "invalid_request"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


RETRYABLE: frozenset[ErrorType] = frozenset(
    {ErrorType.NETWORK, ErrorType.TIMEOUT, ErrorType.RATE_LIMITED, ErrorType.SERVER_ERROR}
)


class SpriteQueueError(Exception):
    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(SpriteQueueError):
    status, code = 400, "bad_json"


class Unauthorized(SpriteQueueError):
    status, code = 401, "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(SpriteQueueError):
    status, code = 403, "forbidden"


class NotFound(SpriteQueueError):
    status, code = 404, "not_found"


class Conflict(SpriteQueueError):
    status, code = 409, "conflict"


class NotReady(Conflict):
    code = "not_ready"


class AlreadyFinished(Conflict):
    code = "already_finished"


class PayloadTooLarge(SpriteQueueError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(SpriteQueueError):
    status, code = 415, "unsupported_media_type"


class InvalidRequest(SpriteQueueError):
    status, code = 422, "invalid_request"


class Rejected(SpriteQueueError):
    """Admission said no; the client may try again after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = max(1, int(retry_after_s))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class UserLimit(Rejected):
    status, code = 429, "user_limit"


class TooManyStreams(Rejected):
    status, code = 429, "too_many_streams"


class RateLimited(Rejected):
    """The user made more submissions this minute than ``SPRITEQ_LIMITS__SUBMITS_PER_MINUTE``.

    Not to be confused with ``ErrorType.RATE_LIMITED``, PixelLab throttling a job's call."""

    status, code = 429, "rate_limited"


class QuotaExceeded(Rejected):
    """The user sent ``SPRITEQ_LIMITS__DAILY_GENERATIONS`` jobs to PixelLab this UTC day."""

    status, code = 429, "quota_exceeded"


class QueueFull(Rejected):
    status, code = 503, "queue_full"


class Unavailable(SpriteQueueError):
    status, code = 503, "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class UpstreamError(SpriteQueueError):
    """A generation failed at PixelLab (or on the way there)."""

    status, code = 502, "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        error_type: ErrorType,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.http_status = http_status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.error_type in RETRYABLE


class FencedOut(SpriteQueueError):
    """A runner's write was refused: its attempt no longer holds the job's fence (the job was
    cancelled, finished, or taken over by another worker). The runner abandons the job."""

    status, code = 409, "fenced_out"


class TooManyAuthFailures(Rejected):
    """Too many failed token look-ups from one client address this minute."""

    status, code = 429, "too_many_auth_failures"


class ConfigurationError(SpriteQueueError):
    """A setting that makes a process refuse to start (raised before it serves anything)."""

    status, code = 500, "configuration"
