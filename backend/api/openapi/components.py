"""The document's components: pydantic schemas, shared headers, parameters and error responses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import (
    CoreModeRef,
    CoreRef,
    DefsRef,
    GenerateJsonSchema,
    JsonSchemaMode,
    models_json_schema,
)

from backend.api.schemas import InvalidRequestBody
from backend.errors import (
    Forbidden,
    InvalidRequest,
    Rejected,
    SpriteQueueError,
    Unauthorized,
    Unavailable,
)
from backend.models import ErrorBody

JSON = dict[str, Any]
REF_TEMPLATE = "#/components/schemas/{model}"
_NESTED_CLASS = re.compile(r"\b([A-Z]\w*)\.(?=[A-Z])")


class _QualifiedNames(GenerateJsonSchema):
    """Names a nested model by its whole class path.

    pydantic names ``ErrorBody.Detail`` plain ``Detail``, which is also the detail-level enum
    of ``backend.models``; on such a clash it falls back to ``Detail-Input``/``Detail-Output``,
    names that change with whichever models happen to be listed. ``ErrorBodyDetail`` does not.
    """

    def get_defs_ref(self, core_mode_ref: CoreModeRef) -> DefsRef:
        core_ref, mode = core_mode_ref
        return super().get_defs_ref((CoreRef(_NESTED_CLASS.sub(r"\1", core_ref)), mode))


class Schemas:
    """JSON Schemas of pydantic models, collected under ``components.schemas``."""

    def __init__(self, models: Sequence[tuple[type[BaseModel], JsonSchemaMode]]) -> None:
        refs, top = models_json_schema(
            models, ref_template=REF_TEMPLATE, schema_generator=_QualifiedNames
        )
        self.components: JSON = top.get("$defs", {})
        self._refs = {model: ref for (model, _mode), ref in refs.items()}

    def ref(self, model: type[BaseModel]) -> JSON:
        """A ``$ref`` to ``model``; raises KeyError for a model that was not collected."""
        return dict(self._refs[model])

    def json(self, model: type[BaseModel], description: str, **extra: Any) -> JSON:
        """A response whose body is ``model`` as JSON."""
        return {
            "description": description,
            "content": {"application/json": {"schema": self.ref(model)}},
            **extra,
        }


def header(name: str) -> JSON:
    return {"$ref": f"#/components/headers/{name}"}


def parameter(name: str) -> JSON:
    return {"$ref": f"#/components/parameters/{name}"}


def response(name: str) -> JSON:
    return {"$ref": f"#/components/responses/{name}"}


HEADERS: JSON = {
    "X-Request-ID": {
        "description": "The request's id: the caller's `X-Request-ID` if it was valid, else a "
        "new one. Every log line about the request carries it.",
        "required": True,
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "ETag": {
        "description": "A validator of the body; send it back as `If-None-Match`.",
        "required": True,
        "schema": {"type": "string", "pattern": r'^"[0-9a-f]+"$'},
    },
    "X-Poll-Interval": {
        "description": "Seconds until polling again is worth it; 0 once the job has finished.",
        "required": True,
        "schema": {"type": "number", "minimum": 0},
    },
    "Location": {
        "description": "The job's status URL (with `variants` > 1, the group's).",
        "required": True,
        "schema": {"type": "string", "pattern": r"^/v1/(jobs|groups)/[^/]+$"},
    },
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with: `Bearer`.",
        "required": True,
        "schema": {"type": "string", "const": "Bearer"},
    },
}

PARAMETERS: JSON = {
    "JobId": {
        "name": "job_id",
        "in": "path",
        "required": True,
        "description": "The job's id, as `job_id` in the submission's answer.",
        "schema": {"type": "string", "minLength": 1},
    },
    "RequestId": {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": "Your id for this request, echoed back and logged: 1 to 128 of "
        "`A-Z a-z 0-9 . _ : -`. Any other value is replaced by a new id, never rejected.",
        "schema": {"type": "string"},
    },
}

SECURITY_SCHEMES: JSON = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `spritequeue token create --user NAME [--admin]`. "
        "`/v1/admin/*` needs an admin token.",
    }
}


def links(pointer: str, *operation_ids: str) -> JSON:
    """Links that pass the ``job_id`` at ``pointer`` of this answer's body to each operation."""
    return {
        operation_id[0].upper() + operation_id[1:]: {
            "operationId": operation_id,
            "parameters": {"job_id": f"$response.body#{pointer}"},
        }
        for operation_id in operation_ids
    }


JOB_LINKS = ("getJob", "streamJobEvents", "getJobResult", "cancelJob")


def _example(err: type[SpriteQueueError], message: str) -> JSON:
    detail: JSON = {"code": err.code, "message": message}
    if err is InvalidRequest:
        detail["details"] = [{"field": "image_size.width", "reason": "must be at least 16"}]
    return {"error": detail}


def error(description: str, *errors: type[SpriteQueueError], schemas: Schemas) -> JSON:
    """An error response of ``errors`` (one status), with each error's ``code`` as an example.

    ``Retry-After`` is documented as sent exactly when the error classes send it.
    """
    statuses = {err.status for err in errors}
    if len(statuses) != 1:
        raise ValueError(f"one response has one status, not {sorted(statuses)}")
    body = InvalidRequestBody if errors[0] is InvalidRequest else ErrorBody
    examples = {err.code: {"value": _example(err, description)} for err in errors}
    headers: JSON = {}
    if all(issubclass(err, (Rejected, Unavailable)) for err in errors):
        headers["Retry-After"] = header("Retry-After")
    if errors == (Unauthorized,):
        headers["WWW-Authenticate"] = header("WWW-Authenticate")
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": schemas.ref(body), "examples": examples}},
    }


def shared_responses(schemas: Schemas) -> JSON:
    return {
        "Unauthorized": error("Missing or unknown bearer token.", Unauthorized, schemas=schemas),
        "Forbidden": error("The token is not an admin token.", Forbidden, schemas=schemas),
        "Unavailable": error(
            "Redis is unavailable (a dependency is down); try again shortly.",
            Unavailable,
            schemas=schemas,
        ),
    }


def with_request_id(responses: JSON) -> JSON:
    """Every response carries ``X-Request-ID`` (the RequestContext middleware adds it)."""
    for answer in responses.values():
        if "$ref" not in answer:
            answer.setdefault("headers", {})["X-Request-ID"] = header("X-Request-ID")
    return responses
