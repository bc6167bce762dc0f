"""Schemathesis against the running service: generated requests, answers checked by the document.

Requests go to a real stack (uvicorn, Redis, mock PixelLab, a worker). Operations come from
``build_document`` at import time, so each is its own pytest item; test_openapi checks that
the stack serves exactly that document. (schemathesis' lazy ``from_fixture`` loader, which
would read it from the stack, breaks on pytest 9.2: it sets ``Node._nodeid``, now gone.)

Each operation runs schemathesis' examples, coverage (boundary and invalid values, wrong
methods and media types) and fuzzing phases, positive and negative, with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth

from fixtures.factories import auth
from tests.conftest import Stack
from tests.contract.support import FUZZ_CHECKS, SCHEMA, wait_idle, wait_ready

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same inputs every run: CI must not flake on a lucky draw
    # One stack per operation, made before Hypothesis runs; its examples share it on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# ignored_auth replays a successful request without the token and with a wrong one, and
# fails unless both are refused.
SECURED_CHECKS = [*FUZZ_CHECKS, ignored_auth]


@pytest.fixture
def ready_stack(stack: Stack) -> Iterator[Stack]:
    wait_ready(stack.url)
    yield stack
    # Stopping a worker in the middle of a job can strand a Redis pipeline, whose warning
    # then fails whichever test the garbage collector happens to run in.
    wait_idle(stack.url)


@SCHEMA.include(tag="jobs").parametrize()
@FUZZ
def test_job_operations_with_a_user_token(
    case: Any, ready_stack: Stack, tokens: dict[str, str]
) -> None:
    headers = auth(tokens["alice"])
    case.call_and_validate(base_url=ready_stack.url, headers=headers, checks=SECURED_CHECKS)


@SCHEMA.include(tag="admin").parametrize()
@FUZZ
def test_admin_operations_with_an_admin_token(
    case: Any, ready_stack: Stack, tokens: dict[str, str]
) -> None:
    headers = auth(tokens["admin"])
    case.call_and_validate(base_url=ready_stack.url, headers=headers, checks=SECURED_CHECKS)


@SCHEMA.include(tag_regex="^(queue|health|pages|meta)$").parametrize()
@FUZZ
def test_public_operations_without_a_token(case: Any, ready_stack: Stack) -> None:
    case.call_and_validate(base_url=ready_stack.url, checks=FUZZ_CHECKS)
