"""CI smoke of the load tools: ``load/benchmark.py --smoke``, ``load/bench_positions.py
--smoke`` and a short headless Locust run."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.config import Settings
from backend.embedded_redis import EmbeddedRedis
from tests.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


async def _run(
    argv: list[str], *, timeout_s: float, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a command from the repository root; returns its exit code and combined output."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        pytest.fail(f"{argv[:3]} ran over {timeout_s:g} s:\n{output.decode(errors='replace')}")
    return process.returncode or 0, output.decode(errors="replace")


async def test_benchmark_smoke_prints_the_table(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    argv = [sys.executable, "load/benchmark.py", "--smoke", "--json", str(figures)]
    code, output = await _run(argv, timeout_s=55)

    assert code == 0, output[-4000:]
    for figure in ("drain, one worker process", "submit -> completed p99", "cache-hit submit p99"):
        assert figure in output
    written = json.loads(figures.read_text())
    # No figure is asserted (CI machines vary); only that every part ran and finished its jobs.
    assert written["errors"] == {}
    assert {"raw", "full", "slow", "cache"} <= written.keys()
    assert written["slow"]["done"] == written["slow"]["jobs"]


async def test_positions_benchmark_smoke_delivers_every_move() -> None:
    code, output = await _run([sys.executable, "load/bench_positions.py", "--smoke"], timeout_s=60)
    # Exit 0 means every start reached every waiting job's client as a new place.
    assert code == 0, output[-4000:]
    assert "moves that never reached their client: 0" in output
    assert "just after a start" in output


@pytest.mark.timeout(150)
async def test_chaos_smoke_keeps_every_invariant() -> None:
    # Worker SIGKILL and SIGTERM, a Redis restart longer than a lease, cancels, 429s, 5xx.
    code, output = await _run([sys.executable, "load/chaos.py", "--smoke"], timeout_s=140)
    assert "invariant violations: 0" in output, output[-4000:]
    assert code == 0, output[-4000:]
    assert '"kill": 1' in output and '"redis": 1' in output  # the faults really happened


async def test_locust_headless_run_has_no_unexpected_failures(
    make_stack: Callable[..., Stack],
    settings: Settings,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    stack = make_stack(settings)
    tokens = tmp_path / "tokens.json"
    code, output = await _run(
        [
            sys.executable,
            "load/make_tokens.py",
            "--users",
            "5",
            "--redis-url",
            redis_server.url,
            "--out",
            str(tokens),
        ],
        timeout_s=20,
    )
    assert code == 0, output
    code, output = await _run(
        [
            str(BIN / "locust"),
            "-f",
            "load/locustfile.py",
            "--headless",
            "-u",
            "5",
            "-r",
            "5",
            "-t",
            "10s",
            "--host",
            stack.url,
            "--exit-code-on-error",
            "1",
            "--only-summary",
            "--csv",
            str(tmp_path / "locust"),
        ],
        timeout_s=40,
        env={"SPRITEQ_LOAD_TOKENS": str(tokens)},
    )

    assert code == 0, output[-4000:]
    with (tmp_path / "locust_stats.csv").open() as stats:
        total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0, output[-4000:]
