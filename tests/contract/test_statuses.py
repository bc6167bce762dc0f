"""Every status code the document promises is one the running service really answers.

One scenario drives each documented (method, path, status) on real stacks and validates
every answer against the document (status, media type, body schema, headers); then the set
of answers seen must cover the set documented. The only exceptions are the shared 503 for
"Redis is down" (one handler for every route, ``backend/api/errors.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from backend.config import Settings
from fixtures.factories import auth, sprite_request
from tests.conftest import Stack
from tests.contract.support import DOCUMENT, Recorder, wait_ready

JOBS, JOB = "/v1/jobs", "/v1/jobs/{job_id}"
RESULT, EVENTS = "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/events"
DLQ, ENTRY, RETRY = "/v1/admin/dlq", "/v1/admin/dlq/{job_id}", "/v1/admin/dlq/{job_id}/retry"
BULK = "/v1/admin/dlq/retry"
GROUP = "/v1/groups/{group_id}"
REDIS_DOWN = {"$ref": "#/components/responses/Unavailable"}


def documented() -> set[tuple[str, str, int]]:
    return {
        (method.upper(), path, int(status))
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        for status, answer in operation["responses"].items()
        if answer != REDIS_DOWN
    }


def submit(rec: Recorder, token: str, description: str, want: int = 202) -> str:
    response = rec.call("POST", JOBS, token=token, json=sprite_request(description))
    assert response.status_code == want, response.text
    return str(response.json().get("job_id"))


def wait_for(rec: Recorder, token: str, job_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        body: dict[str, Any] = rec.call("GET", JOB, token=token, job_id=job_id).json()
        if body["status"] in statuses or time.monotonic() > deadline:
            assert body["status"] in statuses, body
            return body
        time.sleep(0.05)


def auth_is_enforced(rec: Recorder, user: str) -> None:
    """No token: 401 on every secured operation; a user's token on an admin one: 403."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == []:
                continue
            job_id = "x" if "{job_id}" in path else None
            ids = {"job_id": job_id, "group_id": "x" if "{group_id}" in path else None}
            assert rec.call(method.upper(), path, **ids).status_code == 401, path
            wrong = rec.call(method.upper(), path, token="not-a-token", **ids)
            assert wrong.status_code == 401, path
            if path.startswith("/v1/admin/"):
                assert rec.call(method.upper(), path, token=user, job_id=job_id).status_code == 403


def public_operations(rec: Recorder) -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == []:
                assert rec.call(method.upper(), path).status_code == 200, path


def job_lifecycle(rec: Recorder, alice: str, bob: str) -> None:
    job_id = submit(rec, alice, "a contract knight")
    wait_for(rec, alice, job_id, "completed")
    etag = rec.call("GET", JOB, token=alice, job_id=job_id).headers["etag"]
    unchanged = rec.call("GET", JOB, token=alice, job_id=job_id, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert rec.call("GET", RESULT, token=alice, job_id=job_id).status_code == 200
    gif = rec.call("GET", RESULT, token=alice, job_id=job_id, params={"format": "gif"})
    assert gif.status_code == 200
    no_frame = rec.call("GET", RESULT, token=alice, job_id=job_id, params={"frame": "1"})
    assert no_frame.status_code == 422
    stream = rec.call("GET", EVENTS, token=alice, job_id=job_id)
    assert stream.status_code == 200
    last_id = [line[4:] for line in stream.text.splitlines() if line.startswith("id: ")][-1]
    after_final = rec.call("GET", EVENTS, token=alice, job_id=job_id,
                           headers={"Last-Event-ID": last_id})  # fmt: skip
    assert after_final.status_code == 204
    bad_resume = rec.call("GET", EVENTS, token=alice, job_id=job_id, params={"last_event_id": "x"})
    assert bad_resume.status_code == 422
    assert rec.call("DELETE", JOB, token=alice, job_id=job_id).status_code == 409
    assert submit(rec, bob, "a contract knight", want=200)  # another user: from the cache
    assert rec.call("GET", JOBS, token=alice).status_code == 200
    assert rec.call("GET", JOBS, token=alice, params={"limit": "0"}).status_code == 422
    for method, path in (("GET", JOB), ("DELETE", JOB), ("GET", RESULT), ("GET", EVENTS)):
        assert rec.call(method, path, token=bob, job_id=job_id).status_code == 404, path
    chained = {"operation": "rotate", "image_size": {"width": 64, "height": 64},
               "from_image": {"type": "job", "job_id": job_id}}  # fmt: skip
    assert rec.call("POST", JOBS, token=bob, json=chained).status_code == 404  # alice's job


def groups_and_priorities(rec: Recorder, alice: str, bob: str) -> None:
    high = sprite_request("an urgent knight", priority="high")
    assert rec.call("POST", JOBS, token=alice, json=high).status_code == 403
    variants = rec.call("POST", JOBS, token=alice, json=sprite_request("a twin", variants=2))
    assert variants.status_code == 202
    group_id = variants.json()["group_id"]
    assert rec.call("GET", GROUP, token=alice, group_id=group_id).status_code == 200
    assert rec.call("GET", GROUP, token=bob, group_id=group_id).status_code == 404


def submission_errors(rec: Recorder, alice: str) -> None:
    def post(content: bytes, content_type: str = "application/json") -> int:
        headers = {"Content-Type": content_type}
        return rec.call("POST", JOBS, token=alice, content=content, headers=headers).status_code

    assert post(b"{not json") == 400
    assert post(b'{"description": "x"}', "text/plain") == 415
    assert post(b'{"description": "' + b"x" * 70_000 + b'"}') == 413
    assert post(b'{"description": "", "image_size": {"width": 64, "height": 64}}') == 422


def dead_letters(rec: Recorder, alice: str, admin: str) -> str:
    """Drive the DLQ operations; returns the id of an entry left in the DLQ."""
    job_id = submit(rec, alice, "a broken golem [mock:failure]")
    wait_for(rec, alice, job_id, "failed")
    assert rec.call("GET", DLQ, token=admin).status_code == 200
    assert rec.call("GET", DLQ, token=admin, params={"limit": "0"}).status_code == 422
    assert rec.call("GET", ENTRY, token=admin, job_id=job_id).status_code == 200
    assert rec.call("POST", RETRY, token=admin, job_id=job_id).status_code == 202
    wait_for(rec, alice, job_id, "failed")
    assert rec.call("DELETE", ENTRY, token=admin, job_id=job_id).status_code == 204
    for method, path in (("GET", ENTRY), ("DELETE", ENTRY), ("POST", RETRY)):
        assert rec.call(method, path, token=admin, job_id=job_id).status_code == 404, path
    assert rec.call("GET", "/v1/admin/stats", token=admin).status_code == 200
    assert rec.call("GET", "/v1/admin/upstream", token=admin).status_code == 200
    assert rec.call("POST", "/v1/admin/upstream/resume", token=admin).status_code == 200
    bulk_retry(rec, admin)
    kept = submit(rec, alice, "another broken golem [mock:failure]")
    wait_for(rec, alice, kept, "failed")
    return kept


def bulk_retry(rec: Recorder, admin: str) -> None:
    def post(content: bytes, content_type: str = "application/json") -> int:
        headers = {"Content-Type": content_type}
        return rec.call("POST", BULK, token=admin, content=content, headers=headers).status_code

    assert post(b'{"ids": ["not-dead-lettered"]}') == 202
    assert post(b"{not json") == 400
    assert post(b'{"error_type": "timeout"}', "text/plain") == 415
    assert post(b'{"ids": ["' + b"x" * 70_000 + b'"]}') == 413
    assert post(b'{"error_type": "timeout", "ids": ["a"]}') == 422


def at_the_limits(rec: Recorder, tokens: dict[str, str], dead: str) -> None:
    """On a stack with no worker, room for 2 jobs, 1 per user and 1 stream per user."""
    alice, bob, admin = tokens["alice"], tokens["bob"], tokens["admin"]
    assert rec.call("GET", "/health/ready").status_code == 503
    queued = submit(rec, alice, "a queued knight")
    submit(rec, alice, "a second knight", want=429)
    waiting = submit(rec, bob, "a queued goblin")
    submit(rec, admin, "a third knight", want=503)
    assert rec.call("POST", RETRY, token=admin, job_id=dead).status_code == 503
    assert rec.call("GET", RESULT, token=alice, job_id=queued).status_code == 409
    assert rec.call("DELETE", JOB, token=alice, job_id=queued).status_code == 202
    with rec.http.stream("GET", f"/v1/jobs/{waiting}/events", headers=auth(bob)) as first:
        assert first.status_code == 200
        assert rec.call("GET", EVENTS, token=bob, job_id=waiting).status_code == 429


def test_every_documented_status_is_answered_and_conforms(
    stack: Stack,
    make_stack: Callable[..., Stack],
    make_settings: Callable[..., Settings],
    tokens: dict[str, str],
) -> None:
    wait_ready(stack.url)
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        rec = Recorder(http)
        public_operations(rec)
        auth_is_enforced(rec, tokens["alice"])
        job_lifecycle(rec, tokens["alice"], tokens["bob"])
        groups_and_priorities(rec, tokens["alice"], tokens["bob"])
        submission_errors(rec, tokens["alice"])
        dead = dead_letters(rec, tokens["alice"], tokens["admin"])
    stack.stop_worker()  # from here on, what is queued stays queued
    limits = {"queue_capacity": 2, "per_user": 1, "max_sse_per_user": 1}
    tight = make_stack(make_settings(limits=limits), worker=False)
    with httpx.Client(base_url=tight.url, timeout=10) as http:
        tight_rec = Recorder(http)
        at_the_limits(tight_rec, tokens, dead)
    missing = documented() - rec.seen - tight_rec.seen
    assert not missing, f"documented but never answered: {sorted(missing)}"
