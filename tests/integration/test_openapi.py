"""The OpenAPI document: valid 3.1, in step with the routes, served with a local reference page."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from pydantic import BaseModel
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.routing import BaseRoute, Mount, Route

from backend.api.app import create_app
from backend.api.openapi import build_document
from backend.api.schemas import (
    AdminStats,
    DlqEntry,
    DlqPage,
    DlqRetryResult,
    InvalidRequestBody,
    JobEvent,
    JobList,
    Liveness,
    Readiness,
)
from backend.models import JobView
from fixtures.factories import auth, sprite_request, wait_for_status
from fixtures.stack import test_settings as stack_settings
from tests.conftest import Stack
from tests.contract.support import DOCUMENT

# Mounts that serve files (the pages' and the reference page's assets), not operations:
# left out of the document on purpose.
UNDOCUMENTED_MOUNTS = {"/static", "/docs/assets"}
PUBLIC = {"/v1/queue", "/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs",
          "/", "/admin"}  # fmt: skip
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in METHODS
    }


def app_operations(routes: list[BaseRoute], prefix: str = "") -> tuple[set[Any], set[str]]:
    """(method, path) of every route, Mounts walked; and the paths of mounts with no routes."""
    operations: set[tuple[str, str]] = set()
    mounts: set[str] = set()
    for route in routes:
        if isinstance(route, Mount) and route.routes:
            inner, inner_mounts = app_operations(route.routes, prefix + route.path)
            operations |= inner
            mounts |= inner_mounts
        elif isinstance(route, Mount):
            mounts.add(prefix + route.path)
        else:
            assert isinstance(route, Route), f"a route this test cannot read: {route!r}"
            # Starlette adds HEAD to every GET route by itself.
            operations |= {(m, prefix + route.path) for m in route.methods or {"GET"}} - {
                ("HEAD", prefix + route.path)
            }
    return operations, mounts


def test_routes_and_document_agree() -> None:
    app = create_app(stack_settings("redis://unused", "http://unused"))
    routes, mounts = app_operations(app.routes)
    assert sorted(routes - documented_operations()) == [], "routes missing from the document"
    assert sorted(documented_operations() - routes) == [], "documented but no such route"
    assert mounts == UNDOCUMENTED_MOUNTS


async def test_served_document_is_valid_openapi_31_and_the_one_tested(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    served = response.json()
    validate(served, cls=OpenAPIV31SpecValidator)
    assert served["openapi"].startswith("3.1.")
    assert served == json.loads(json.dumps(build_document(stack.settings)))
    assert served == json.loads(json.dumps(DOCUMENT)), "the contract tests fuzz another document"


def test_component_names_are_plain_and_stable() -> None:
    # A pydantic name clash shows up as "Name-Input"/"Name-Output" or a module path.
    names = DOCUMENT["components"]["schemas"]
    assert [name for name in names if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", name)] == []


def test_operations_declare_ids_security_and_headers() -> None:
    operations = [
        (path, method, operation)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
    ]
    ids = [operation["operationId"] for _, _, operation in operations]
    assert len(ids) == len(set(ids))
    assert DOCUMENT["security"] == [{"bearerAuth": []}]
    assert {path for path, _, op in operations if op.get("security") == []} == PUBLIC
    shared = DOCUMENT["components"]["responses"]
    for path, method, operation in operations:
        for status, answer in operation["responses"].items():
            answer = shared[answer["$ref"].rsplit("/", 1)[1]] if "$ref" in answer else answer
            headers = answer.get("headers", {})
            assert "X-Request-ID" in headers, (method, path, status)
            # /health/ready's 503 is a report for load balancers, not a refusal to retry.
            if status == "429" or (status == "503" and path != "/health/ready"):
                assert "Retry-After" in headers, (method, path, status)


def test_the_new_refusals_and_the_bulk_retry_are_documented() -> None:
    submit = DOCUMENT["paths"]["/v1/jobs"]["post"]["responses"]["429"]
    codes = set(submit["content"]["application/json"]["examples"])
    assert codes == {"user_limit", "rate_limited", "quota_exceeded"}
    assert "Retry-After" in submit["headers"]
    bulk = DOCUMENT["paths"]["/v1/admin/dlq/retry"]["post"]
    assert bulk["operationId"] == "retryDeadLettersByFilter"
    assert set(bulk["responses"]) >= {"202", "401", "403", "422"}
    schema = DOCUMENT["components"]["schemas"]["DlqRetryFilter"]
    assert set(schema["properties"]) == {"error_type", "ids"}


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


async def test_docs_page_uses_only_local_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert not re.search(r"(https?:)?//", page.text), "the page must work without internet"
    assert '<script src="/static/docs.js">' in page.text
    assert 'url: "/openapi.json"' in (await client.get("/static/docs.js")).text
    parser = _Assets()
    parser.feed(page.text)
    assert len(parser.urls) >= 3
    for url in parser.urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    script = next(url for url in parser.urls if url.endswith("swagger-ui-bundle.js"))
    assert "javascript" in (await client.get(script)).headers["content-type"]


def _closed(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every object schema that names its properties closed to others."""
    closed = copy.deepcopy(document)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(closed["components"]["schemas"])
    return closed


_REGISTRY: Registry[Any] = Registry().with_resource(
    "urn:api", DRAFT202012.create_resource(_closed(DOCUMENT))
)


def conforms(model: type[BaseModel], body: Any) -> None:
    """``body`` is a valid ``model`` and has no field its schema does not name."""
    model.model_validate(body)
    schema = {"$ref": f"urn:api#/components/schemas/{model.__name__}"}
    errors = [e.message for e in Draft202012Validator(schema, registry=_REGISTRY).iter_errors(body)]
    assert errors == [], f"{model.__name__}: {errors}"


async def test_real_bodies_match_their_models(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    alice, admin = auth(tokens["alice"]), auth(tokens["admin"])
    broken = await client.post("/v1/jobs", json=sprite_request("a golem [mock:failure]"),
                               headers=alice)  # fmt: skip
    fine = await client.post("/v1/jobs", json=sprite_request("a fine golem"), headers=alice)
    for submitted, final in ((broken, "failed"), (fine, "completed")):
        job = await wait_for_status(client, submitted.json()["job_id"], tokens["alice"], {final})
        conforms(JobView, job)
    conforms(JobList, (await client.get("/v1/jobs", headers=alice)).json())
    page = (await client.get("/v1/admin/dlq", headers=admin)).json()
    conforms(DlqPage, page)
    assert page["items"], "the failed job should be dead-lettered"
    entry = await client.get(f"/v1/admin/dlq/{broken.json()['job_id']}", headers=admin)
    conforms(DlqEntry, entry.json())
    conforms(AdminStats, (await client.get("/v1/admin/stats", headers=admin)).json())
    bulk = await client.post("/v1/admin/dlq/retry", json={"error_type": "auth"}, headers=admin)
    conforms(DlqRetryResult, bulk.json())
    conforms(Liveness, (await client.get("/health/live")).json())
    conforms(Readiness, (await client.get("/health/ready")).json())
    conforms(Readiness, (await client.get("/health/ready", headers=admin)).json())
    invalid = await client.post("/v1/jobs", json={"description": ""}, headers=alice)
    conforms(InvalidRequestBody, invalid.json())


async def test_sse_frames_are_the_documented_events(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    alice = auth(tokens["alice"])
    job_id = (await client.post("/v1/jobs", json=sprite_request("an owl"), headers=alice)).json()[
        "job_id"
    ]
    await wait_for_status(client, job_id, tokens["alice"], {"completed"})
    stream = await client.get(f"/v1/jobs/{job_id}/events", headers=alice)
    frames = [
        dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        for block in stream.text.replace("\r\n", "\n").split("\n\n")
        if "data: " in block
    ]
    events = [JobEvent.model_validate(frame) for frame in frames]
    operation = DOCUMENT["paths"]["/v1/jobs/{job_id}/events"]["get"]
    documented = operation["responses"]["200"]["content"]["text/event-stream"]["x-sse-events"]
    finals = {event["event"] for event in documented if event["final"]}
    assert [event.event for event in events[:-1]] == ["progress"] * (len(events) - 1)
    assert events[-1].event in finals and events[-1].data.status == "completed"
    assert all(event.data.job_id == job_id for event in events)
