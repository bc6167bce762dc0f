#!/usr/bin/env bash
# Regenerates the two lock files from pyproject.toml, with hashes, after a dependency change:
#   requirements-dev.lock  runtime + the dev extra: the venv (bootstrap.sh), CI and pip-audit
#   requirements.lock      runtime only, the same versions: the Docker image
# Resolved against PyPI alone, whatever the local pip configuration says (mirrors, wheel
# folders), so every hash in the files is PyPI's and an install works on any machine.
# Pass --upgrade (or --upgrade-package NAME) to move pins; with no argument, pins are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT
common=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url
        --index-url https://pypi.org/simple)
.venv/bin/pip-compile "${common[@]}" "$@" --extra dev -o requirements-dev.lock pyproject.toml
.venv/bin/pip-compile "${common[@]}" -c requirements-dev.lock -o requirements.lock pyproject.toml
