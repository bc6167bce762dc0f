"""Integration fixtures: the official Firestore emulator (once per session) and clients for it.

The emulator is the jar that the Google Cloud CLI installs, run directly with java (faster
than ``gcloud emulators firestore start``, and no gcloud config is touched). Where java or
the jar is missing the tests that need it skip; with ``SPRITEQ_REQUIRE_FIRESTORE=1`` (CI)
they fail instead. ``SPRITEQ_FIRESTORE_EMULATOR_JAR`` points at a jar elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from google.cloud import firestore

from backend.embedded_redis import free_port

FIRESTORE_PROJECT = "spritequeue-test"
_EMULATOR_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
_JAR_IN_SDK = Path("platform/cloud-firestore-emulator/cloud-firestore-emulator.jar")
_DEFAULT_SDK = Path("/usr/lib/google-cloud-sdk")
# The emulator's work is tiny: the JIT's top tier and a parallel GC only slow its start.
_JVM_FLAGS = ["-Duser.language=en", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
_START_TIMEOUT_S = 60.0

# Loaded here, not in the child: the forked child should run as little Python as possible.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphan JVM if pytest is killed


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("SPRITEQ_REQUIRE_FIRESTORE") == "1":
        pytest.fail(f"Firestore emulator required (SPRITEQ_REQUIRE_FIRESTORE=1): {reason}")
    pytest.skip(f"Firestore emulator not available: {reason}")


def _find_jar() -> Path | None:
    if configured := os.environ.get("SPRITEQ_FIRESTORE_EMULATOR_JAR"):
        return Path(configured) if Path(configured).is_file() else None
    candidates = []
    if gcloud := shutil.which("gcloud"):
        # <sdk>/bin/gcloud, usually reached through a symlink such as /usr/bin/gcloud
        candidates.append(Path(gcloud).resolve().parent.parent / _JAR_IN_SDK)
    candidates.append(_DEFAULT_SDK / _JAR_IN_SDK)
    return next((path for path in candidates if path.is_file()), None)


def _answers(host: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{host}/", timeout=0.5) as r:
        return bool(r.status == 200)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the emulator on a free port; yields its ``host:port``, also in the environment."""
    java = shutil.which("java")
    if java is None:
        _unavailable("java is not on PATH")
    jar = _find_jar()
    if jar is None:
        _unavailable(
            "no emulator jar: install the gcloud component cloud-firestore-emulator"
            " or point SPRITEQ_FIRESTORE_EMULATOR_JAR at one"
        )
    port = free_port()
    host = f"127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("firestore") / "emulator.log"
    command = [java, *_JVM_FLAGS, "-cp", str(jar), _EMULATOR_MAIN,
               "--host=127.0.0.1", f"--port={port}"]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown can kill it all
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _answers(host):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                pytest.fail(f"Firestore emulator did not start on {host}:\n{tail}")
            time.sleep(0.05)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("FIRESTORE_EMULATOR_HOST", host)
            yield host
    finally:
        _stop(process)


@pytest.fixture
async def firestore_client(firestore_emulator: str) -> AsyncIterator[firestore.AsyncClient]:
    """A client on an emptied emulator database.

    Created inside the test's event loop: the gRPC channel binds to the loop that opens it.
    """
    documents = (
        f"http://{firestore_emulator}/emulator/v1/projects/{FIRESTORE_PROJECT}"
        "/databases/(default)/documents"
    )
    async with httpx.AsyncClient() as http:
        (await http.delete(documents)).raise_for_status()
    client = firestore.AsyncClient(project=FIRESTORE_PROJECT)
    yield client
    await _close(client)


@pytest.fixture
async def unreachable_firestore_client(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[firestore.AsyncClient]:
    """A client for an emulator address where nothing listens (needs no emulator)."""
    with monkeypatch.context() as env:
        # The client reads the variable once, when it is created.
        env.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
        client = firestore.AsyncClient(project=FIRESTORE_PROJECT)
    yield client
    await _close(client)


async def _close(client: firestore.AsyncClient) -> None:
    # The library has no public close; the transport exists once a call has opened a channel.
    transport = getattr(client, "_transport", None)
    if transport is not None:
        await transport.close()
