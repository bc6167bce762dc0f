"""The log pipeline: one JSON object per line, bound ids carried, secrets and prompts scrubbed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from backend.logs import REDACTED, TEXT_KEEP, configure_logging, redact


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """JSON logs into a buffer for one test; the root logger is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    yield stream
    root.handlers, root.level = handlers, level


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_redact_blanks_secrets_by_key_name_at_any_depth() -> None:
    event = redact(
        None,
        "info",
        {
            "event": "called_upstream",
            "token": "tok-123",
            "Authorization": "Bearer abc",
            "api_key": "sk-1",
            "headers": {"x-api-key": "sk-2", "accept": "image/png"},
            "attempts": [{"password": "hunter2", "n": 1}],
            "client_secret": "s",
            "job_id": "j1",
        },
    )
    assert event["token"] == event["Authorization"] == event["api_key"] == REDACTED
    assert event["headers"] == {"x-api-key": REDACTED, "accept": "image/png"}
    assert event["attempts"] == [{"password": REDACTED, "n": 1}]
    assert event["client_secret"] == REDACTED
    assert event["job_id"] == "j1" and event["event"] == "called_upstream"


def test_redact_shortens_prompts_and_replaces_bytes() -> None:
    prompt = "a knight " * 50
    event = redact(
        None,
        "info",
        {"event": "x", "description": prompt, "request": {"prompt": prompt}, "png": b"\x89PNG" * 9},
    )
    assert event["description"].startswith(prompt[:TEXT_KEEP])
    assert (
        len(event["description"]) < TEXT_KEEP + 20
        and f"{len(prompt)} chars" in event["description"]
    )
    assert event["request"]["prompt"] == event["description"]
    assert event["png"] == "<36 bytes>"
    assert redact(None, "info", {"event": "x", "description": "short"})["description"] == "short"


def test_every_line_is_json_with_the_standard_fields_and_bound_ids(log_stream: io.StringIO) -> None:
    logger = structlog.get_logger("tests.logs")
    with structlog.contextvars.bound_contextvars(request_id="r-1", job_id="j-1", user_id="alice"):
        logger.info("job_completed", duration_s=1.5, api_key="sk-secret")
    logging.getLogger("arq.worker").warning("plain stdlib line with %s", "args")
    logger.error("job_crashed", exc_info=ValueError("boom"))

    completed, foreign, crashed = lines(log_stream)
    for line in (completed, foreign, crashed):
        assert {"timestamp", "level", "event", "logger"} <= line.keys()
    assert completed["event"] == "job_completed" and completed["logger"] == "tests.logs"
    assert (completed["request_id"], completed["job_id"], completed["user_id"]) == (
        "r-1",
        "j-1",
        "alice",
    )
    assert completed["api_key"] == REDACTED and "sk-secret" not in log_stream.getvalue()
    assert foreign == foreign | {"event": "plain stdlib line with args", "logger": "arq.worker"}
    assert foreign["level"] == "warning" and "request_id" not in foreign
    assert "ValueError: boom" in crashed["exception"]


def test_arqs_per_job_lines_are_left_to_our_own_events(log_stream: io.StringIO) -> None:
    # arq writes a "→" and a "←" INFO line per job; our job_started and job_completed say
    # the same with the job's ids, so arq's are dropped (a worker's CPU per job, see
    # docs/benchmarks.md). Its warnings and errors still come through.
    arq = logging.getLogger("arq.worker")
    arq.info("%6.2fs → %s(%s)%s", 0.01, "job-1:generate_sprite", "", "")
    arq.warning("job-2 failed")
    assert [line["event"] for line in lines(log_stream)] == ["job-2 failed"]


def test_configure_logging_twice_keeps_capture_logs_working(log_stream: io.StringIO) -> None:
    logger = structlog.get_logger("tests.logs.cached")
    logger.info("first_use_caches_the_logger")
    configure_logging("INFO", stream=log_stream)  # as every create_app does
    with structlog.testing.capture_logs() as captured:
        logger.info("captured_event", token="t")
    assert [entry["event"] for entry in captured] == ["captured_event"]


def test_secrets_in_messages_and_tracebacks_are_redacted_after_formatting(
    log_stream: io.StringIO,
) -> None:
    url = "redis://default:hunter2-pw@redis.internal:6379/0"
    logging.getLogger("redis.client").warning("cannot reach %s with token sq_%s", url, "A" * 43)
    try:
        raise ConnectionError(
            f"Error connecting to rediss://:s3cret-pw@cache:6380/1 (api_key={url})"
        )
    except ConnectionError:
        logging.getLogger("arq.worker").exception("job failed: Authorization: Bearer abc.def")
    structlog.get_logger("tests.logs").error("cache_failed", url=url, detail={"dsn": url})
    text = log_stream.getvalue()
    for secret in ("hunter2-pw", "s3cret-pw", "A" * 43, "abc.def"):
        assert secret not in text
    foreign, crashed, bound = lines(log_stream)
    assert (
        foreign["event"]
        == "cannot reach redis://default:***@redis.internal:6379/0 with token sq_[redacted]"
    )
    assert "rediss://:***@cache:6380/1" in crashed["exception"]
    assert "Traceback" in crashed["exception"] and "Bearer [redacted]" in crashed["event"]
    assert bound["url"] == bound["detail"]["dsn"] == "redis://default:***@redis.internal:6379/0"


def test_settings_never_show_a_redis_password() -> None:
    from backend.config import Settings

    settings = Settings(
        redis_url="rediss://user:queue-pw@q:6380/0",
        cache_redis_url="redis+sentinel://:cache-pw@s1:26379,s2:26379/main",
    )
    assert settings.redis_url == "rediss://user:queue-pw@q:6380/0"  # the clients get it whole
    for shown in (repr(settings), str(settings)):
        assert "queue-pw" not in shown and "cache-pw" not in shown
        assert "rediss://user:***@q:6380/0" in shown
