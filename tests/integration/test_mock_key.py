"""The mock's API key travels by environment: never on a command line other users can read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend import dev
from backend.embedded_redis import free_port
from backend.processes import spawn_cli, stop_process, wait_http
from fixtures.factories import sprite_request


class _Spawned(Exception):
    pass


def test_dev_passes_the_mock_key_by_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[list[str], dict[str, str]]] = []

    def spawn(args: list[str], env: dict[str, str], **popen: Any) -> Any:
        seen.append((args, env))
        raise _Spawned  # stop run_dev right after it starts the mock

    monkeypatch.setattr(dev, "spawn_cli", spawn)
    monkeypatch.setenv("SPRITEQ_REDIS_URL", "redis://127.0.0.1:1/0")  # no embedded Valkey
    monkeypatch.delenv("SPRITEQ_PIXELLAB__API_KEY", raising=False)
    with pytest.raises(_Spawned):
        dev.run_dev(port=free_port(), data_dir=tmp_path)
    ((args, env),) = seen
    assert args[0] == "mock-pixellab" and "--api-key" not in args
    key = env["SPRITEQ_MOCK_API_KEY"]
    assert key.startswith("mock-") and not any(key in arg for arg in args)
    assert "SPRITEQ_MOCK_API_KEY" not in os.environ  # only the child's environment has it


def test_the_mock_takes_its_key_from_the_environment() -> None:
    port = free_port()
    env = {**os.environ, "SPRITEQ_MOCK_API_KEY": "env-only-key"}
    mock = spawn_cli(["mock-pixellab", "--port", str(port)], env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/_mock/stats")
        body = sprite_request()
        wrong = httpx.post(
            url + "/generate-image-pixflux", json=body, headers={"Authorization": "Bearer no"}
        )
        assert wrong.status_code == 401
        right = httpx.post(
            url + "/generate-image-pixflux",
            json=body,
            headers={"Authorization": "Bearer env-only-key"},
        )
        assert right.status_code == 200
    finally:
        mock.terminate()
        stop_process(mock)


def test_without_the_mock_installed_the_command_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import builtins

    from backend.cli import main

    real_import = builtins.__import__

    def no_mocks(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "mocks" or name.startswith("mocks."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mocks)
    assert main(["mock-pixellab"]) == 2
    assert "mock PixelLab is not installed" in capsys.readouterr().err
