"""What a job's visible error says: a fixed sentence per error type, never our own exception
text or a traceback (those go to the log, under the job's id).

PixelLab's own ``detail`` is passed on only for ``invalid_request``, where it tells the
artist what to change, cut to ``MAX_DETAIL_CHARS``.
"""

from __future__ import annotations

from backend.errors import ErrorType, UpstreamError

MAX_DETAIL_CHARS = 300

_SENTENCES: dict[ErrorType, str] = {
    ErrorType.NETWORK: "could not reach PixelLab",
    ErrorType.TIMEOUT: "PixelLab did not answer in time",
    ErrorType.RATE_LIMITED: "PixelLab is throttling requests",
    ErrorType.SERVER_ERROR: "PixelLab failed to generate the sprite",
    ErrorType.AUTH: "PixelLab refused the service's API key",
    ErrorType.INSUFFICIENT_CREDITS: "the PixelLab account has run out of credit",
    ErrorType.INVALID_REQUEST: "PixelLab rejected the request",
    ErrorType.CANCELLED: "cancelled",
}


def visible_message(error_type: ErrorType, exc: BaseException | None, job_id: str) -> str:
    """The message a user (and the DLQ) sees for a failure of type ``error_type``."""
    if error_type is ErrorType.INTERNAL:
        return f"internal error (job {job_id})"
    sentence = _SENTENCES[error_type]
    if error_type is ErrorType.INVALID_REQUEST and isinstance(exc, UpstreamError):
        detail = " ".join(exc.message.split())
        if detail:
            if len(detail) > MAX_DETAIL_CHARS:
                detail = detail[: MAX_DETAIL_CHARS - 1] + "…"
            return f"{sentence}: {detail}"
    if isinstance(exc, UpstreamError) and exc.http_status is not None:
        return f"{sentence} (HTTP {exc.http_status})"
    return sentence
