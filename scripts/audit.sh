#!/usr/bin/env bash
# Known vulnerabilities in the locked dependencies (PyPI's advisory data, via pip-audit).
# Exits non-zero on any finding, so CI fails until the lock is moved to a fixed version
# (scripts/lock.sh --upgrade-package NAME). A finding with no fix yet may be accepted only
# with an --ignore-vuln ID line here and a reason beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
# --disable-pip: the locks are fully pinned and hashed, so nothing is resolved or installed.
.venv/bin/pip-audit --progress-spinner off --disable-pip --require-hashes \
  -r requirements.lock -r requirements-dev.lock "$@"
