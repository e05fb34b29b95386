#!/usr/bin/env bash
# The main job: one teacher → two students on the built-in synthetic click log
# (jobs/configs/demo.yaml; a few minutes on 2 CPU cores). Prints the η table and writes
# runs/demo/{results.json,report.md,config.yaml}. Extra arguments are dotted config
# overrides, e.g. `bash scripts/demo.sh run.seed=1 students.0.alpha=2 run.name=alpha2`.
# The demo rewrites its own run directory on every call (--overwrite); `recdistill run`
# itself refuses a directory that already holds a run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/recdistill run jobs/configs/demo.yaml --overwrite "$@"
