"""compose.yaml is linted here (``docker compose config`` is not on these machines).

Every service that runs our image runs a real ``spritequeue`` command line, every
``SPRITEQ_*`` variable it sets or interpolates is a real setting, and the two Redis servers
have the policies the service relies on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.cli import build_parser
from backend.config_docs import env_names

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "spritequeue:local"
# Read by the image itself, not by Settings: the Dockerfile's health check.
NOT_SETTINGS = {"SPRITEQ_PROBE_URL"}
INTERPOLATION = re.compile(r"\$\{(\w+)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _ours(service: dict[str, Any]) -> bool:
    return service.get("image") == IMAGE or service.get("build") is not None


def test_the_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "redis", "cache-redis", "firestore", "mock", "api", "worker", "tokens",
    }  # fmt: skip


def test_our_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, service in compose["services"].items():
        if not _ours(service):
            continue
        command = service["command"]
        assert isinstance(command, list) and all(isinstance(arg, str) for arg in command), name
        try:
            parser.parse_args(command)
        except SystemExit:
            pytest.fail(f"service {name}: `spritequeue {' '.join(command)}` is not a command")


def test_every_variable_is_a_setting(compose: dict[str, Any]) -> None:
    settings = set(env_names())
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if variable.startswith("SPRITEQ_"):
                assert variable in settings | NOT_SETTINGS, f"{name}: {variable} is no setting"
            for used in INTERPOLATION.findall(str(value)):
                if used.startswith("SPRITEQ_"):
                    assert used in settings, f"{name}: ${{{used}}} is no setting"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert all(variable in dockerfile for variable in NOT_SETTINGS)


def test_depends_on_names_services(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for other in service.get("depends_on") or {}:
            assert other in compose["services"], f"{name} depends on unknown {other}"


def test_the_queue_redis_never_evicts_and_the_cache_redis_does(compose: dict[str, Any]) -> None:
    queue = compose["services"]["redis"]["command"]
    cache = compose["services"]["cache-redis"]["command"]
    assert queue[queue.index("--maxmemory-policy") + 1] == "noeviction"
    assert queue[queue.index("--appendonly") + 1] == "yes"
    assert cache[cache.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert cache[cache.index("--maxmemory") + 1] not in ("", "0")
    environment = compose["services"]["api"]["environment"]
    assert environment["SPRITEQ_REDIS_URL"].startswith("redis://redis:")
    assert environment["SPRITEQ_CACHE_REDIS_URL"].startswith("redis://cache-redis:")


def test_the_app_reaches_the_mock_with_its_key(compose: dict[str, Any]) -> None:
    mock = compose["services"]["mock"]["command"]
    key = mock[mock.index("--api-key") + 1]
    for name in ("api", "worker", "tokens"):
        environment = compose["services"][name]["environment"]
        assert environment["SPRITEQ_PIXELLAB__API_KEY"].endswith(f":-{key}}}"), name
        assert environment["SPRITEQ_PIXELLAB__BASE_URL"].endswith(":-http://mock:8700}"), name
