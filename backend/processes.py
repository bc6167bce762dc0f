"""Child processes for ``spritequeue dev`` and the tests: spawn tied to the parent, wait, stop."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from backend.errors import Unavailable

_PR_SET_PDEATHSIG = 1
# Resolved here, in the parent: a ``preexec_fn`` runs between fork and exec, where loading a
# library (``dlopen``) can hang for good if another thread held the loader's lock at the
# fork (gRPC's threads do, in a process that uses Firestore; seen as a child that never
# started, in CI). Calling a function already resolved takes no such lock.
_LINUX = sys.platform.startswith("linux")
_PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl if _LINUX else None


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """``preexec_fn``: on Linux the child gets SIGTERM when its parent dies, so none leaks."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_cli(args: list[str], env: dict[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """``spritequeue ARGS`` as a child process that dies with this one."""
    return subprocess.Popen(
        [sys.executable, "-m", "backend.cli", *args], env=env, preexec_fn=die_with_parent, **popen
    )


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    """Wait until ``url`` answers below 500; raises ``Unavailable`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise Unavailable(f"{url} did not answer within {timeout_s:.0f} s")
