"""``spritequeue api`` runs uvicorn with the server limits of its settings."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from backend.cli import uvicorn_options
from backend.config import Settings
from backend.embedded_redis import free_port
from fixtures.stack import spawn, stop_process, wait_http


def test_the_server_settings_become_uvicorn_options(settings: Settings) -> None:
    assert uvicorn_options(Settings()) == {
        "limit_concurrency": 2000,
        "timeout_keep_alive": 75,
        "timeout_graceful_shutdown": 5,
        "backlog": 2048,
    }
    custom = settings.model_copy(
        update={"server": settings.server.model_copy(update={"limit_concurrency": 7})}
    )
    assert uvicorn_options(custom)["limit_concurrency"] == 7


@pytest.fixture
def api_process(settings: Settings) -> Iterator[str]:
    port = free_port()
    limited = settings.model_copy(
        update={"server": settings.server.model_copy(update={"limit_concurrency": 2})}
    )
    process: subprocess.Popen[bytes] = spawn(["api", "--port", str(port)], limited)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health/live")
        yield url
    finally:
        stop_process(process, timeout_s=5)


def test_a_request_beyond_limit_concurrency_is_503(
    api_process: str,
) -> None:
    port = int(api_process.rsplit(":", 1)[1])
    assert httpx.get(api_process + "/health/live").status_code == 200
    # One idle connection held open: with the request's own that is the limit of 2.
    with socket.create_connection(("127.0.0.1", port)) as idle:
        idle.settimeout(5)
        beyond = httpx.get(api_process + "/health/live")
        assert beyond.status_code == 503
    # The connection gone, requests are served again.
    for _ in range(50):
        if httpx.get(api_process + "/health/live").status_code == 200:
            break
    else:
        raise AssertionError("still refused after the idle connection closed")
