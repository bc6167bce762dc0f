"""Stateful schemathesis: chains of calls that follow the document's links on the running service.

A submission's ``job_id`` feeds the job's status, events, result and cancel; a DLQ page's
first entry feeds get, retry and delete. Admin operations get the admin token, the rest a
user's.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from schemathesis import Case, Response

from fixtures.factories import auth
from tests.conftest import Stack
from tests.contract.support import FUZZ_CHECKS, SCHEMA, wait_idle, wait_ready


def test_linked_workflows_conform(stack: Stack, tokens: dict[str, str]) -> None:
    wait_ready(stack.url)

    class Workflow(SCHEMA.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            admin = case.operation.path.startswith("/v1/admin/")
            token = tokens["admin"] if admin else tokens["alice"]
            return {"base_url": stack.url, "headers": auth(token)}

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=FUZZ_CHECKS, transport_kwargs=kwargs)

    Workflow.run(
        settings=settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
    wait_idle(stack.url)  # see test_fuzz.ready_stack
