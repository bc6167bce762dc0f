"""Stand-ins for external services, run over real HTTP by tests, load tests and ``dev``."""

from __future__ import annotations

from mocks.pixellab import SCENARIOS, create_mock_app, run_mock

__all__ = ["SCENARIOS", "create_mock_app", "run_mock"]
