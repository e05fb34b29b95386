#!/usr/bin/env bash
# The main job: one teacher → two students on the built-in synthetic click log
# (jobs/configs/demo.yaml; a few minutes on 2 CPU cores). Prints the η table and writes
# runs/demo/{results.json,report.md,config.yaml}. Extra arguments are dotted config
# overrides, e.g. `bash scripts/demo.sh run.seed=1 students.0.alpha=2`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled
.venv/bin/recdistill run jobs/configs/demo.yaml "$@"
