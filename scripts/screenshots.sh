#!/usr/bin/env bash
# Refreshes the screenshots the docs show (docs/screenshots/*.png) by running the browser
# tests with their output pointed there. The ordinary test run writes to the ignored
# .artifacts/screenshots/ instead, so it never changes a tracked file.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
SPRITEQ_SCREENSHOTS_DIR="$PWD/docs/screenshots" SPRITEQ_REQUIRE_BROWSER=1 \
  .venv/bin/pytest tests/browser -q -p no:cacheprovider "$@"
git status --short docs/screenshots
