"""Children tied to their parent: what runs between fork and exec."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from typing import Any

import pytest

from backend.processes import die_with_parent


def _no_dlopen(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a library was loaded between fork and exec")


def test_a_child_loads_no_library_between_fork_and_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``die_with_parent`` runs in the forked child before exec. Loading libc there
    # (``dlopen``) can hang for good when another thread of the parent held the loader's
    # lock at the fork: gRPC's threads in a test process that used Firestore did, and an
    # API or worker child then never started (CI, twice). Before, it loaded libc there, and
    # this spawn failed with "Exception occurred in preexec_fn".
    monkeypatch.setattr(ctypes, "CDLL", _no_dlopen)
    child = subprocess.Popen(
        [sys.executable, "-c", "import os; print(os.getppid())"],
        stdout=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    out, _ = child.communicate(timeout=20)
    assert child.returncode == 0 and int(out) == os.getpid()
