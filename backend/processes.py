"""Child processes for ``spritequeue dev`` and the tests: spawn tied to the parent, wait, stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx

from backend.errors import Unavailable


def tied(argv: list[str]) -> list[str]:
    """``argv`` run so that it dies with this process (``backend.launch``): nothing runs
    in the child between fork and exec, so a spawn is safe with other threads running."""
    return [sys.executable, "-m", "backend.launch", str(os.getpid()), *argv]


def spawn_cli(args: list[str], env: dict[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """``spritequeue ARGS`` as a child process that dies with this one."""
    return subprocess.Popen(tied([sys.executable, "-m", "backend.cli", *args]), env=env, **popen)


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
