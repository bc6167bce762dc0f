"""Structured JSON logs with structlog: one JSON object per line, ids bound per scope, redacted.

structlog over a stdlib JSON formatter because its contextvars binding (request_id, job_id,
user_id bound once per request or job, then present on every line that scope logs) and
``capture_logs()`` for tests are exactly what we need; stdlib records (uvicorn, arq) are
rendered through the same processors, so every line on stderr has the same shape:
``{"event", "level", "logger", "timestamp", ...bound ids, ...fields}``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from backend.config import hide_url_password

REDACTED = "[redacted]"
TEXT_KEEP = 40  # characters of a prompt kept in a log line: enough to recognise, not to leak
_SECRET_KEY = re.compile(r"token|authorization|api[_-]?key|password|passwd|secret|cookie", re.I)
_TEXT_KEYS = frozenset({"description", "prompt", "negative_description"})
_MAX_DEPTH = 4
# Secrets inside free text (a message, an exception's text, a traceback), by their shape.
_TEXT_SECRETS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bsq_[A-Za-z0-9_-]{16,}"), "sq_" + REDACTED),  # our API tokens
    (re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]+", re.I), r"\1 " + REDACTED),
    (
        re.compile(
            r"\b((?:[a-z_-]*(?:api[_-]?key|token|password|passwd|secret))[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',;&)}]+",
            re.I,
        ),
        r"\1" + REDACTED,
    ),
]


def _scrub(key: str, value: Any, depth: int) -> Any:
    if _SECRET_KEY.search(key):
        return REDACTED if value not in (None, "") else value
    if key in _TEXT_KEYS and isinstance(value, str) and len(value) > TEXT_KEEP:
        return f"{value[:TEXT_KEEP]}… ({len(value)} chars)"
    if isinstance(value, bytes | bytearray | memoryview):
        # Never an image in a log line: its size says all an operator needs.
        return f"<{len(value)} bytes>"
    if depth < _MAX_DEPTH and isinstance(value, dict):
        return {k: _scrub(str(k), v, depth + 1) for k, v in value.items()}
    if depth < _MAX_DEPTH and isinstance(value, list | tuple):
        return [_scrub(key, v, depth + 1) for v in value]
    return value


def redact_text(text: str) -> str:
    """``text`` with URL passwords, bearer tokens and ``secret=value`` pairs blanked."""
    text = hide_url_password(text)
    for pattern, replacement in _TEXT_SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _scrub_text(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth < _MAX_DEPTH and isinstance(value, dict):
        return {k: _scrub_text(v, depth + 1) for k, v in value.items()}
    if depth < _MAX_DEPTH and isinstance(value, list | tuple):
        return [_scrub_text(v, depth + 1) for v in value]
    return value


def redact_rendered(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Blank secrets by their shape in every text, the message and the traceback included.

    Runs after ``format_exc_info``, so an exception's text and its traceback are plain
    strings by then: what is redacted is exactly what is written.
    """
    for key, value in list(event_dict.items()):
        event_dict[key] = _scrub_text(value, 0)
    return event_dict


def redact(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Blank secrets (by key name), shorten prompts and drop raw bytes, at any nesting."""
    for key, value in list(event_dict.items()):
        if key != "event":
            event_dict[key] = _scrub(key, value, 0)
    return event_dict


_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact,
]
# One list object for the life of the process: loggers cached on first use keep a reference
# to it, and ``capture_logs()`` swaps its contents in place, so both keep working however
# many times ``configure_logging`` runs (every ``create_app`` calls it).
_PROCESSORS: list[structlog.typing.Processor] = [
    *_SHARED,
    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
]


def json_formatter() -> logging.Formatter:
    """The formatter that renders structlog events and stdlib records as one JSON line."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_rendered,
            structlog.processors.JSONRenderer(),
        ],
    )


def configure_logging(level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """One JSON line per event on ``stream`` (stderr); safe to call more than once."""
    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # A Python warning printed raw would be the one non-JSON line on stderr.
    logging.captureWarnings(True)
    # Lines we already write as events of our own: one per request (uvicorn.access, our
    # request log) or per job start and end (arq.worker's "→"/"←" lines: job_started,
    # job_completed). At INFO, arq's two lines a job cost a worker ~6 % of its CPU per job
    # (docs/benchmarks.md).
    for noisy in ("httpx", "httpcore", "uvicorn.access", "arq.worker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
