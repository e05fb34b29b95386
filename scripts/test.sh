#!/usr/bin/env bash
# The test suite (fast, on tiny synthetic data and a local Ray cluster). Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled WANDB_MODE=offline
mkdir -p .tmp
export TMPDIR="$PWD/.tmp" RAY_TMPDIR="$PWD/.tmp"
exec .venv/bin/python -m pytest -q "$@"
