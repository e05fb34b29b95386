#!/usr/bin/env bash
# Creates .venv and installs recdistill with its test extra. Idempotent: re-runs are
# cheap once pyproject.toml has not changed. The CPU build of torch goes in first so
# that pip never resolves the multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.recdistill-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" 2>&1 | grep -v '^WARNING: Location' || true
  fi
  .venv/bin/python -m pip install -q -e ".[test,onnx]" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import recdistill, torch, ray, pyarrow, wandb" \
    || { echo "setup: install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
