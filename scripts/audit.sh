#!/usr/bin/env bash
# Known vulnerabilities in the locked dependencies (PyPI's advisory data, via pip-audit).
# Fails on any vulnerability that has a fixed release (move the pin: scripts/lock.sh
# --upgrade-package NAME); one with no fix yet is printed, not fatal. A dependency the
# advisory service could not look up is a warning, and a failure with SPRITEQ_REQUIRE_AUDIT=1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
report=$(mktemp)
trap 'rm -f "$report"' EXIT
# --disable-pip: the locks are fully pinned and hashed, so nothing is resolved or installed.
# pip-audit's own exit status is ignored: the verdict below is the one that counts.
.venv/bin/pip-audit --progress-spinner off --disable-pip --require-hashes --format json \
  --output "$report" -r requirements.lock -r requirements-dev.lock "$@" 2>/dev/null || true
.venv/bin/python scripts/audit_verdict.py "$report"
