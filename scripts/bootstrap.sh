#!/usr/bin/env bash
# Creates ./.venv and installs spritequeue with its dev extra from the lock file (exact
# versions, every file checked against its hash). Idempotent; used by the two README
# commands and by CI. After a dependency change in pyproject.toml run scripts/lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.spritequeue-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements-dev.lock -nt "$stamp" ]; then
  # --no-deps: the lock already names every package, so pip installs it as written and
  # resolves nothing (pip 23's resolver otherwise takes the newest release for a
  # requirement with extras, such as pytest-cov's coverage[toml], and rejects its hash).
  .venv/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements-dev.lock
  .venv/bin/python -m pip check
  # Our own package on top, with nothing new: its build backend (setuptools) is in the lock.
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
