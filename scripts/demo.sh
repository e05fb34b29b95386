#!/usr/bin/env bash
# The main job: generate the built-in synthetic click log and summarise it with the
# platform's reader. Extra arguments are dotted config overrides (data.rows=1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled
out=runs/demo/data
.venv/bin/recdistill synth --out "$out" "$@"
.venv/bin/recdistill data inspect "$out" --format parquet
