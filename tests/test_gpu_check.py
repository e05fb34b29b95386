"""benchmarks/gpu_check.sh, the prepared GPU check, runs here at CPU smoke scale so that it
cannot rot between the sessions that have a GPU: its three smoke commands resolve and its
throughput benchmark runs every figure it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_at_cpu_smoke_scale(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["device"] == "cpu" and bench["rows"] == 20_000
    for key in ("inline_samples_per_s", "platform_samples_per_s", "teacher_dcnv2_samples_per_s",
                "teacher_tokenmixer_samples_per_s"):
        assert bench[key] > 0, key
    for config in ("demo", "online_demo", "transfer_demo"):
        assert "device: cpu" in (tmp_path / f"{config}.config.yaml").read_text()
    assert "done:" in (tmp_path / "check.log").read_text()
    bad = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--gpu"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
