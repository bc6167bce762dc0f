"""Pure retry policy: classify a failure, decide whether to retry it, and how long to wait."""

from __future__ import annotations

from backend.retry.backoff import backoff_s, retry_delay_s, should_retry
from backend.retry.classify import classify_exception, classify_status, parse_retry_after
from backend.retry.messages import visible_message

__all__ = [
    "backoff_s",
    "classify_exception",
    "classify_status",
    "parse_retry_after",
    "retry_delay_s",
    "should_retry",
    "visible_message",
]
