"""Children tied to their parent, with nothing run between fork and exec."""

from __future__ import annotations

import subprocess
import sys
import time

# Prints the signal the child gets when its parent dies (PR_GET_PDEATHSIG), then sleeps.
_REPORT = (
    "import ctypes, time; v = ctypes.c_int(); "
    "ctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(v)); print(v.value, flush=True); "
    "time.sleep(60)"
)
# A parent that starts a tied child, says its pid, and waits to be killed.
_PARENT = (
    "import subprocess, sys; from backend.processes import tied; "
    f"c = subprocess.Popen(tied([sys.executable, '-c', {_REPORT!r}]), stdout=sys.stdout); "
    "print(c.pid, flush=True); c.wait()"
)


def test_a_tied_child_dies_with_its_parent_and_no_preexec_fn_runs() -> None:
    # Before, children were tied by a ``preexec_fn`` that loaded libc between fork and exec;
    # with gRPC's threads in the test process (the Firestore tests, in CI) an API or worker
    # child sometimes never started (a lock held at the fork). ``tied`` execs a launcher
    # that ties itself and then becomes the program.
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "15"  # SIGTERM when the parent dies
    parent.kill()
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child_pid}/stat") as stat:
                if stat.read().split(") ")[1].startswith("Z"):
                    break  # dead, waiting to be reaped
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the tied child outlived its parent")
