#!/usr/bin/env bash
# The prepared GPU check (issue 21): on one GPU, in under 8 minutes,
#   1. the 1→N smoke run, 2. the online smoke run, 3. the transfer smoke run, each on the GPU;
#   4. benchmarks/bench_gpu.py: a DCNv2 student's samples/s through the platform vs an
#      inline loop on the same model and tensors, the GPU speed options, DCNv2 and
#      TokenMixer teachers' samples/s.
# Figures go to $GPU_CHECK_OUT (default .tmp/gpu_check; not $OUT, which the device tool sets):
# each run's results.json, bench.json, check.log. On a lent GPU machine, which has no Ray and
# no package index, the wheels of benchmarks/device_kit.py travel with it: benchmarks/README.md
# ("GPU") has the whole command.
#
#   bash benchmarks/gpu_check.sh            # on a GPU machine (run.device=cuda: fails without one)
#   bash benchmarks/gpu_check.sh --cpu      # the same at smoke scale on CPU (the suite runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
GPU_CHECK_OUT=${GPU_CHECK_OUT:-.tmp/gpu_check}
mkdir -p "$GPU_CHECK_OUT"
device=cuda
bench=(--rows 4000000 --batch 16384 --compile)
if [[ "${1:-}" == "--cpu" ]]; then
  device=cpu
  bench=(--smoke)
elif [[ -n "${1:-}" ]]; then
  echo "usage: bash benchmarks/gpu_check.sh [--cpu]" >&2
  exit 2
fi
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} WANDB_MODE=${WANDB_MODE:-offline}
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$GPU_CHECK_OUT/check.log"; }
log "device $device; $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
if [[ "$device" == cuda ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$GPU_CHECK_OUT/check.log"
fi
configs=(demo online_demo transfer_demo)
if [[ "$device" == cpu ]]; then
  # at CPU smoke scale the suite already trains each of these (tests/test_jobs.py, tests/online/,
  # tests/transfer/): here their command lines are resolved, not trained a second time
  for config in "${configs[@]}"; do
    $PY -m recdistill.cli config show "jobs/configs/$config.yaml" run.device=$device "run.dir=$GPU_CHECK_OUT/$config" \
      > "$GPU_CHECK_OUT/$config.config.yaml"
  done
  log "${configs[*]}: commands checked (configs resolved in $GPU_CHECK_OUT/*.config.yaml)"
else
  for config in "${configs[@]}"; do
    t0=$SECONDS
    $PY -m recdistill.cli run "jobs/configs/$config.yaml" --smoke-test --overwrite run.device=$device \
      "run.dir=$GPU_CHECK_OUT/$config" tracking.wandb=disabled 2>&1 | tail -n 25 | tee -a "$GPU_CHECK_OUT/check.log"
    log "$config smoke on $device: $((SECONDS - t0)) s, results in $GPU_CHECK_OUT/$config/results.json"
  done
fi
$PY benchmarks/bench_gpu.py "${bench[@]}" --json "$GPU_CHECK_OUT/bench.json" 2>&1 | tee -a "$GPU_CHECK_OUT/check.log"
log "done: $GPU_CHECK_OUT/bench.json"
