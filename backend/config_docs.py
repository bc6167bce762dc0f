"""Writes docs/configuration.md from the ``Settings`` model, so the page cannot drift from it.

    python -m backend.config_docs           # rewrite docs/configuration.md
    python -m backend.config_docs --check   # exit 1 if the page is out of date

A setting's text is its ``Field(description=...)`` when it has one, else the entry for its
environment name in ``DESCRIPTIONS`` below. A setting with neither fails the check (and
``tests/unit/test_config_docs.py``), so a new setting cannot go undocumented.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from backend.config import Settings

PREFIX = "SPRITEQ_"
DELIMITER = "__"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

SECTIONS: dict[str, str] = {
    "": "Connections and process-wide settings",
    "redis": "The queue's Redis (`redis`)",
    "pixellab": "PixelLab (`pixellab`)",
    "firestore": "Firestore, the L2 cache (`firestore`)",
    "cache": "The result cache (`cache`)",
    "limits": "Admission and request limits (`limits`)",
    "jobs": "Jobs, retries and the DLQ (`jobs`)",
    "worker": "Worker processes (`worker`)",
    "sse": "Server-Sent Events (`sse`)",
    "auth": "Token look-ups (`auth`)",
    "server": "The API's HTTP server, uvicorn (`server`)",
    "webhooks": "Webhook deliveries (`webhooks`)",
}

# Meaning, then when to change it. Keyed by environment name.
DESCRIPTIONS: dict[str, str] = {
    "SPRITEQ_REDIS_URL": "The queue's Redis: jobs, slots, events, tokens, the DLQ. "
    "`rediss://` and `redis://:password@host` work. It must run with "
    "`maxmemory-policy noeviction`. `spritequeue dev` starts an embedded one when unset.",
    "SPRITEQ_CACHE_REDIS_URL": "The L1 cache's Redis. Unset, L1 shares the queue's Redis, "
    "and cached PNGs then count against its `noeviction` memory. In production point it at "
    "a second Redis with `maxmemory` and `allkeys-lru`; `spritequeue dev` starts one.",
    "SPRITEQ_ADMIN_TOKEN": "A bootstrap admin token, compared in constant time, for a fresh "
    "deployment before any token exists. Prefer `spritequeue token create --admin`; unset "
    "it once you have one.",
    "SPRITEQ_QUEUE_NAME": "The name of arq's queue (a sorted set). Change it only to run two "
    "independent deployments on one Redis database.",
    "SPRITEQ_LOG_LEVEL": "The level of the JSON logs (`DEBUG`, `INFO`, `WARNING`, `ERROR`).",
    "SPRITEQ_REDIS__ALLOW_EVICTION": "Start even when the queue's Redis has a "
    "`maxmemory-policy` other than `noeviction`. The API, the worker and the CLI refuse "
    "otherwise, because evicted slots and records break the limits. Set it only for a "
    "throw-away Redis; a managed Redis that forbids `CONFIG` is not checked at all.",
    "SPRITEQ_PIXELLAB__BASE_URL": "PixelLab's API, or the mock (`spritequeue mock-pixellab`).",
    "SPRITEQ_PIXELLAB__MAX_CONCURRENCY": "PixelLab calls at once across every worker, held as "
    "leased permits in Redis (a dead worker's permit lapses with its lease). Set it to what "
    "the PixelLab account allows; while PixelLab answers 429 the service lowers it by itself "
    "and raises it back as calls succeed.",
    "SPRITEQ_PIXELLAB__THROTTLE_MAX_WAIT_S": "How long 429s may defer one job, in all, "
    "before it fails as `rate_limited`. 429s spend no retry until then.",
    "SPRITEQ_PIXELLAB__PROBE_INTERVAL_S": "While calls are paused by a 401 or 402, how often "
    "one process asks PixelLab's `GET /balance` whether the key works and there is credit, "
    "to resume by itself.",
    "SPRITEQ_PIXELLAB__API_KEY": "PixelLab's bearer token (a secret, never logged). "
    "`spritequeue dev` starts the mock when it is unset.",
    "SPRITEQ_PIXELLAB__CONNECT_TIMEOUT_S": "Connect timeout of each PixelLab call; the whole "
    "call is bounded by the job's timeout.",
    "SPRITEQ_PIXELLAB__MAX_CONNECTIONS": "The HTTP connection pool of one worker. Keep it at "
    "least `WORKER__MAX_JOBS`, or jobs queue for a connection.",
    "SPRITEQ_FIRESTORE__PROJECT": "The Google Cloud project of the L2 cache. Unset, L2 is off "
    "and the service runs on L1 alone (it says so at start and in `/health/ready`). "
    "`FIRESTORE_EMULATOR_HOST` is honoured.",
    "SPRITEQ_FIRESTORE__COLLECTION": "The collection of L2 documents (one per cache key).",
    "SPRITEQ_FIRESTORE__DATABASE": "The Firestore database id, for projects with several.",
    "SPRITEQ_FIRESTORE__TIMEOUT_S": "Kept for compatibility; each Firestore call is bounded "
    "by `CACHE__TIMEOUT_S` (reads) and `CACHE__WRITE_TIMEOUT_S` (writes) instead.",
    "SPRITEQ_CACHE__L1_TTL_S": "How long an image stays in L1. Longer costs cache Redis "
    "memory; with an `allkeys-lru` cache Redis, memory pressure evicts first anyway.",
    "SPRITEQ_CACHE__L2_TTL_DAYS": "How long an image stays in L2 (the `expires_at` field, "
    "checked on read and usable by a Firestore TTL policy).",
    "SPRITEQ_CACHE__TIMEOUT_S": "The bound on one cache read. A slower layer counts as a "
    "miss, so a sick cache never slows submissions by more than this.",
    "SPRITEQ_CACHE__WRITE_TIMEOUT_S": "The bound on one cache write (write-through after a "
    "job). A failed write is logged and counted; the job still completes.",
    "SPRITEQ_CACHE__L2_MAX_BYTES": "Images larger than this are not written to L2 "
    "(a Firestore document holds at most 1 MiB).",
    "SPRITEQ_LIMITS__QUEUE_CAPACITY": "The global cap: jobs queued plus running, across all "
    "API processes. Beyond it a submission is `503 queue_full` with `Retry-After`. Raise it "
    "with the number of workers.",
    "SPRITEQ_LIMITS__PER_USER": "Jobs one user may have queued plus running. Beyond it a "
    "submission is `429 user_limit` with `Retry-After`.",
    "SPRITEQ_LIMITS__DEDUP_WINDOW_S": "A user submitting the same request again within this "
    "window gets the same job back (`202`, `deduplicated: true`).",
    "SPRITEQ_LIMITS__WARNING_AT": "Jobs in flight at which the queue state turns `warning` "
    "(log event, metric, `/v1/queue`); `critical` is at the capacity.",
    "SPRITEQ_LIMITS__MAX_BODY_BYTES": "The largest `POST /v1/jobs` body; larger is `413`.",
    "SPRITEQ_LIMITS__MAX_SSE_PER_USER": "Event streams one user may hold open across all API "
    "processes; one more is `429 too_many_streams`.",
    "SPRITEQ_JOBS__TIMEOUT_S": "The PixelLab call's timeout, and the maximum a request's own "
    "`timeout_s` may ask for. A call that runs out is a `timeout` failure (retryable). Time "
    "spent waiting on another job's call for the same image does not count.",
    "SPRITEQ_JOBS__MIN_TIMEOUT_S": "The shortest `timeout_s` a request may ask for (a `422` "
    "below it). PixelLab takes 10-20 s a generation; a shorter timeout can only fail.",
    "SPRITEQ_JOBS__MAX_RETRIES": "Retries after the job's first failed PixelLab call, for the "
    "retryable error types. Only the job's own failed calls spend them: a try cut short by "
    "a shutdown, a lost worker or our Redis does not.",
    "SPRITEQ_JOBS__BACKOFF_BASE_S": "The first retry's delay; each further retry doubles it.",
    "SPRITEQ_JOBS__BACKOFF_MAX_S": "The longest delay between two tries.",
    "SPRITEQ_JOBS__JITTER": "The random spread of each backoff delay (0.10 is ±10 %), so "
    "jobs that failed together do not retry together.",
    "SPRITEQ_JOBS__LEASE_S": "A running job's lease, renewed by its worker every third of it. "
    "A job whose worker died runs again after the lease lapses. Shorter recovers sooner and "
    "costs more renewals.",
    "SPRITEQ_JOBS__MAX_STALLS": "How many times a job may lose its worker (the worker died: "
    "no heartbeat when another took the job over) before it is dead-lettered as `internal`, "
    "so a job that kills its workers stops. A takeover from a worker still alive (cut off "
    "from Redis) does not count.",
    "SPRITEQ_JOBS__KEEP_FINISHED_S": "How long a finished job's record and event stream are "
    "kept (polling, SSE replay, `GET /v1/jobs`).",
    "SPRITEQ_JOBS__DLQ_RETENTION_S": "How long a dead-lettered job stays in the DLQ.",
    "SPRITEQ_JOBS__POSITION_INTERVAL_S": "How often waiting jobs' positions and waits are "
    "refreshed and pushed to their streams (once per interval across all processes).",
    "SPRITEQ_WORKER__MAX_JOBS": "Jobs one worker process runs at once. Jobs mostly wait on "
    "PixelLab, so hundreds per process are fine.",
    "SPRITEQ_WORKER__POLL_DELAY_S": "The pause between two polls of the queue while a worker "
    "keeps finding jobs to start.",
    "SPRITEQ_WORKER__IDLE_POLL_S": "An idle worker is woken by a message when a job is "
    "admitted, requeued or a call permit frees, and also polls on its own this often (or "
    "when the next deferred job is due); a busy one reads arq's abort requests on a cancel's "
    "message and this often. A new job waits for a wake-up, not a poll: this only bounds the "
    "delay a lost message costs.",
    "SPRITEQ_WORKER__SHUTDOWN_GRACE_S": "On SIGTERM, how long running jobs may finish before "
    "the rest are requeued.",
    "SPRITEQ_WORKER__HEARTBEAT_S": "How often a worker reports itself alive (readiness, "
    "`workers_alive`, wait estimates); it counts as gone after three missed beats.",
    "SPRITEQ_AUTH__FAILURES_PER_MINUTE": "Failed token look-ups one client address may make "
    "in a minute before each further one is slowed and answered `429 "
    "too_many_auth_failures`.",
    "SPRITEQ_AUTH__FAILURE_DELAY_MAX_S": "The longest delay given to a failed look-up past "
    "the allowance (the delay doubles from 0.1 s).",
    "SPRITEQ_SSE__PING_S": "The interval of `: ping` keep-alive comments on event streams. "
    "Lower it below your load balancer's idle timeout.",
}


@dataclass(frozen=True)
class Entry:
    env: str
    section: str
    type: str
    default: str
    constraint: str
    description: str | None


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        names = [_type_name(arg) for arg in get_args(annotation) if arg is not type(None)]
        return " or ".join(names)
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _constraint(field: FieldInfo) -> str:
    bounds = []
    for item in field.metadata:
        for name, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, name, None) is not None:
                bounds.append(f"{symbol} {getattr(item, name)}")
    return ", ".join(bounds)


def _entry(env: str, section: str, field: FieldInfo) -> Entry:
    return Entry(
        env=env,
        section=section,
        type=_type_name(field.annotation),
        default=_default(field),
        constraint=_constraint(field),
        description=field.description or DESCRIPTIONS.get(env),
    )


def entries() -> Iterator[Entry]:
    """Every setting of ``Settings``: top-level ones first, then each section in order."""
    sections: list[tuple[str, type[BaseModel]]] = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append((name, annotation))
        else:
            yield _entry(PREFIX + name.upper(), "", field)
    for section, model in sections:
        for name, field in model.model_fields.items():
            env = f"{PREFIX}{section.upper()}{DELIMITER}{name.upper()}"
            yield _entry(env, section, field)


def env_names() -> list[str]:
    return [entry.env for entry in entries()]


def undocumented() -> list[str]:
    return [entry.env for entry in entries() if not entry.description]


HEADER = """\
# Configuration

<!-- Generated by `python -m backend.config_docs` from `backend/config.py`; do not edit. -->

Every setting is an environment variable: the prefix `SPRITEQ_`, then the field name, with
`__` between a section and its field (`SPRITEQ_LIMITS__PER_USER=10`). Values are parsed and
checked by pydantic at start; an invalid one stops the process with the variable's name.
Secrets (`secret` below) are never logged or shown in a settings dump.

This page is generated from the settings model: after adding or changing a setting in
`backend/config.py`, run `python -m backend.config_docs` and commit the page. A setting
needs a `Field(description=...)` or an entry in `DESCRIPTIONS` in `backend/config_docs.py`;
the test suite fails while the page is out of date or a setting has no text.
"""


def render() -> str:
    lines = [HEADER]
    by_section: dict[str, list[Entry]] = {}
    for entry in entries():
        by_section.setdefault(entry.section, []).append(entry)
    for section, items in by_section.items():
        lines.append(f"## {SECTIONS.get(section, f'`{section}`')}\n")
        lines.append("| variable | type | default | meaning, and when to change it |")
        lines.append("|---|---|---|---|")
        for item in items:
            kind = item.type + (f" ({item.constraint})" if item.constraint else "")
            text = (item.description or "**undocumented**").replace("|", "\\|")
            lines.append(f"| `{item.env}` | {kind} | {item.default} | {text} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    missing = undocumented()
    if missing:
        print(f"settings without a description: {', '.join(missing)}", file=sys.stderr)
        return 1
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python -m backend.config_docs", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
