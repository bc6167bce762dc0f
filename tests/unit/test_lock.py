"""The lock files match pyproject.toml, the venv matches the lock, the image uses both."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HINT = "run scripts/lock.sh after a dependency change"


def locked(name: str) -> dict[str, tuple[Version, int]]:
    """package -> (version, number of hashes) from a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[Version, int]] = {}
    current = None
    for line in (ROOT / name).read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match[1])
            pins[current] = (Version(match[2].rstrip("\\").strip()), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def declared() -> tuple[list[Requirement], list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    dev = [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    return runtime, dev


@pytest.mark.parametrize(
    ("lock", "groups"),
    [("requirements.lock", ("runtime",)), ("requirements-dev.lock", ("runtime", "dev"))],
)
def test_every_declared_dependency_is_pinned_within_its_range(
    lock: str, groups: tuple[str, ...]
) -> None:
    pins = locked(lock)
    runtime, dev = declared()
    wanted = [*runtime, *(dev if "dev" in groups else [])]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in {lock}: {HINT}"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside pyproject's {requirement}: {HINT}"
        )
        for extra in requirement.extras:  # redis[hiredis], uvicorn[standard]: extras resolved too
            for dependency in metadata.requires(requirement.name) or []:
                extra_req = Requirement(dependency)
                if extra_req.marker and extra_req.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(extra_req.name) in pins, (
                        f"{requirement.name}[{extra}] needs {extra_req.name}, not in {lock}: {HINT}"
                    )


def test_every_pin_has_hashes_and_the_runtime_lock_agrees_with_the_dev_lock() -> None:
    runtime, dev = locked("requirements.lock"), locked("requirements-dev.lock")
    for lock in (runtime, dev):
        assert lock and all(hashes for _, hashes in lock.values())
    assert {name: pin[0] for name, pin in runtime.items()} == {
        name: dev[name][0] for name in runtime
    }, "requirements.lock and requirements-dev.lock disagree on a version: " + HINT
    # the runtime lock is only what the service needs: no test or lint tool in the image
    for tool in ("pytest", "mypy", "ruff", "locust", "playwright", "pip-audit", "pip-tools"):
        assert canonicalize_name(tool) not in runtime


def test_the_installed_environment_is_the_dev_lock() -> None:
    """What bootstrap.sh installed from the lock is what runs (a stale venv fails here)."""
    wrong = {}
    for name, (version, _) in locked("requirements-dev.lock").items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (str(version), str(installed))
    assert not wrong, (
        f"installed versions differ from requirements-dev.lock (locked, installed): {wrong}"
    )


def test_the_image_is_pinned_and_installs_the_runtime_lock_without_test_code() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert bases and all(re.search(r"@sha256:[0-9a-f]{64}$", base) for base in bases), bases
    assert "--require-hashes" in dockerfile and "-r requirements.lock" in dockerfile
    copied = re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", dockerfile, re.M)
    assert not any(word in {"mocks", "fixtures", "."} for line in copied for word in line.split())
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"mocks", "fixtures", "tests"} <= set(ignored)


def test_installs_go_through_the_lock() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "--require-hashes -r requirements-dev.lock" in bootstrap
    assert "--no-deps" in bootstrap
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/audit.sh" in ci
    audit = (ROOT / "scripts" / "audit.sh").read_text()
    assert "pip-audit" in audit and "requirements-dev.lock" in audit


def _audit_verdict() -> Any:
    spec = importlib.util.spec_from_file_location(
        "audit_verdict", ROOT / "scripts" / "audit_verdict.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.verdict


def test_the_audit_fails_on_a_vulnerability_with_a_fix_only() -> None:
    verdict = _audit_verdict()
    fixable = {
        "name": "jinja2",
        "version": "3.1.4",
        "vulns": [{"id": "GHSA-x", "fix_versions": ["3.1.5"]}],
    }
    unfixed = {
        "name": "ecdsa",
        "version": "0.19.0",
        "vulns": [{"id": "GHSA-y", "fix_versions": []}],
    }
    clean = {"name": "httpx", "version": "0.28.1", "vulns": []}
    skipped = {"name": "arq", "skip_reason": "Dependency not found on PyPI"}
    lines, failure = verdict({"dependencies": [clean, fixable, unfixed]}, require_all=False)
    assert failure is not None and "GHSA-x (3.1.5)" in "\n".join(lines)
    lines, failure = verdict({"dependencies": [clean, unfixed, skipped]}, require_all=False)
    assert failure is None and "GHSA-y (no fix yet)" in "\n".join(lines) and "arq" in lines[-1]
    assert verdict({"dependencies": [clean, skipped]}, require_all=True)[1] is not None
