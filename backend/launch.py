"""``python -m backend.launch PARENT_PID PROGRAM ARGS...``: run PROGRAM tied to its parent.

The launcher asks Linux to send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``,
kept across ``exec``), then becomes PROGRAM. ``backend.processes.tied`` builds the command.
It replaces a ``preexec_fn``: Python code run between fork and exec can hang for good in a
parent with other threads (a lock held at the fork), as the test process with gRPC's
threads did in CI. Standard library only, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    parent, program = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above: no orphan
        sys.exit(1)
    os.execvp(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
