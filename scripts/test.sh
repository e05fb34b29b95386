#!/usr/bin/env bash
# The test suite (fast, on tiny synthetic data and a local Ray cluster). Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# No RAY_AUTH_MODE here: a local Ray runs without token auth (ensure_ray, conftest.py),
# and tests/test_jobs.py's head runs with it, as cluster.yaml's nodes do.
export WANDB_MODE=offline
mkdir -p .tmp
export TMPDIR="$PWD/.tmp" RAY_TMPDIR="$PWD/.tmp"
exec .venv/bin/python -m pytest -q "$@"
