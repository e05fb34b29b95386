#!/usr/bin/env bash
# The test suite (fast, on tiny synthetic data and a local Ray cluster). Extra arguments
# go to pytest. It runs on RECDISTILL_TEST_WORKERS pytest-xdist workers (default 2, each
# with its own local Ray of 2 CPUs and ~3.5 GiB; 0 runs in this process), one test module
# per worker at a time: modules share a Ray cluster and their fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# No RAY_AUTH_MODE here: a local Ray runs without token auth (ensure_ray, conftest.py),
# and tests/test_jobs.py's head runs with it, as cluster.yaml's nodes do.
export WANDB_MODE=offline
mkdir -p .tmp
export TMPDIR="$PWD/.tmp" RAY_TMPDIR="$PWD/.tmp"
workers=${RECDISTILL_TEST_WORKERS:-2}
if [ "$workers" -gt 0 ]; then
  set -- -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
fi
exec .venv/bin/python -m pytest -q "$@"
