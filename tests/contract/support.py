"""The document under test, loaded into schemathesis, and a recorder of conforming answers."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from backend.api.openapi import build_document
from fixtures.factories import auth
from fixtures.stack import test_settings as stack_settings

# The stack's settings differ from these only in addresses, which the document never names;
# test_openapi checks that the stack serves exactly this document.
DOCUMENT = build_document(stack_settings("redis://unused", "http://unused"))
# A copy: the stateful tests' link inference rewrites the dict it is given (inlines $refs).
SCHEMA: OpenApiSchema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))

# What a recorded answer must pass: documented status, media type, body and headers.
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
FUZZ_CHECKS = [not_a_server_error, *CONFORMANCE]


def wait_ready(url: str, timeout_s: float = 10.0) -> None:
    """Until ``/health/ready`` says 200 (the worker's first heartbeat); raises AssertionError."""
    deadline = time.monotonic() + timeout_s
    while (status := httpx.get(f"{url}/health/ready").status_code) != 200:
        assert time.monotonic() < deadline, f"/health/ready still answers {status}"
        time.sleep(0.05)


def wait_idle(url: str, timeout_s: float = 10.0) -> None:
    """Until no job is queued or running, so a stack stops with its worker idle."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queue = httpx.get(f"{url}/v1/queue").json()
        if queue["waiting"] + queue["active"] == 0:
            return
        time.sleep(0.05)


class Recorder:
    """Calls the service, validates each answer against its operation, records the statuses."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.seen: set[tuple[str, str, int]] = set()

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        job_id: str | None = None,
        group_id: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """``path`` as documented (``{job_id}`` or ``{group_id}`` in it); extra ``kwargs`` go
        to httpx."""
        sent = {**(auth(token) if token else {}), **(headers or {})}
        params = {k: v for k, v in (("job_id", job_id), ("group_id", group_id)) if v is not None}
        url = path.format(**params) if params else path
        response = self.http.request(method, url, headers=sent, **kwargs)
        self.check(method, path, response, params=params)
        return response

    def check(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        *,
        job_id: str | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        operation = SCHEMA[path][method]
        params = params or ({"job_id": job_id} if job_id else {})
        case = operation.Case(path_parameters=params or None)
        case.validate_response(response, checks=CONFORMANCE)
        self.seen.add((method, path, response.status_code))
