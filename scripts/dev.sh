#!/usr/bin/env bash
# The whole service on one machine: venv + packages, then `spritequeue dev` (embedded Valkey,
# the mock PixelLab unless SPRITEQ_PIXELLAB__API_KEY is set, the API and a worker).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/spritequeue dev "$@"
