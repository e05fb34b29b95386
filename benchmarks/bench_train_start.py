"""What one Ray Train run costs before and after its work, next to baselines measured in
the same process.

    .venv/bin/python benchmarks/bench_train_start.py [--runs 4]

Each run is a one-worker Train run (our settings: ``recdistill.ray_env.ensure_ray``) whose
train function imports torch (as every loop of ours does) and writes the time and its
process's start time, once as a ``TorchTrainer`` and once as the plain
``DataParallelTrainer`` the platform uses for one worker (``engine.trainer.trainer_class``),
alternating. Per run:

- controller: ``fit()`` called → the Train worker's process exists (Train's controller
  actor, its placement group, the worker actor's process start);
- worker start: the worker's process exists → the train function runs (the worker's
  imports of ray.train and torch, Train's worker and process-group setup);
- end: the train function returned → ``fit()`` returns (the controller's poll and
  shutdown).

Baselines, each in a fresh subprocess of this process: ``python -c pass`` (interpreter
start), ``import ray`` and ``import torch, ray.train.torch`` (the imports every Train
worker and Train's controller make). The figures show how much of a Train run's fixed
cost is process starts and imports that no setting of ours removes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _subprocess_s(code: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t)
    return best


def _noop(config: dict) -> None:
    import psutil
    import torch  # every loop of ours imports it

    assert torch.__version__

    Path(config["out"]).write_text(json.dumps({"fn": time.time(), "created": psutil.Process().create_time()}))


def train_runs(runs: int, tmp: Path, trainer: type) -> list[dict[str, float]]:
    import ray.train

    out = []
    for i in range(runs):
        stamp = tmp / f"run{i}.json"
        t0 = time.time()
        trainer(_noop, train_loop_config={"out": str(stamp)},
                scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                run_config=ray.train.RunConfig(name=f"start{i}", storage_path=str(tmp / "storage"))).fit()
        t1 = time.time()
        s = json.loads(stamp.read_text())
        out.append({"controller_s": s["created"] - t0, "worker_start_s": s["fn"] - s["created"],
                    "end_s": t1 - s["fn"], "total_s": t1 - t0})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=4, help="Train runs of each trainer, after a first, unmeasured one")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from recdistill.ray_env import ensure_ray

    base = {"interpreter": _subprocess_s("pass"), "import ray": _subprocess_s("import ray"),
            "import torch, ray.train.torch": _subprocess_s("import torch, ray.train.torch")}
    ensure_ray(num_cpus=2)
    from ray.train.torch import TorchTrainer

    from recdistill.engine.trainer import trainer_class

    kinds = {"TorchTrainer": TorchTrainer, "DataParallelTrainer": trainer_class(1)}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as d:
        train_runs(1, Path(d) / "warm-up", TorchTrainer)  # the first pays Ray's own warm-up
        for i in range(args.runs):  # alternating: a drift of the machine's speed hits both
            for k, cls in kinds.items():
                runs[k] += train_runs(1, Path(d) / f"{k}{i}", cls)
    print("baselines (fresh subprocess, best of 3):")
    for k, v in base.items():
        print(f"  {k:<32} {v:6.2f} s")
    imports = base["import torch, ray.train.torch"]
    med = {}
    for kind, rs in runs.items():
        med[kind] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"one-worker {kind}, no work (median of {len(rs)}):")
        for k, v in med[kind].items():
            print(f"  {k:<32} {v:6.2f} s   {v / imports:5.2f}x the import baseline")
    ratio = med["DataParallelTrainer"]["total_s"] / med["TorchTrainer"]["total_s"]
    print(f"DataParallelTrainer / TorchTrainer, whole run: {ratio:.2f}")
    print(json.dumps({"baselines_s": base, "train_run_median_s": med, "runs": runs}))


if __name__ == "__main__":
    main()
