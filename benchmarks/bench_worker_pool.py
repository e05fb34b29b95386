"""Whether Ray's idle-worker limit costs a small node: the same runs with the limit Ray sets
itself (one kept idle worker per CPU) and with six (``RAY_num_workers_soft_limit``),
alternating, each setting in a fresh process with its own local Ray (``ensure_ray``).

    .venv/bin/python benchmarks/bench_worker_pool.py [--repeats 2] [--runs 3] [--rows 20000]

One process runs ``--runs`` tiny Ray experiments one after another on its local Ray, each with
a fresh signal store (as a sweep's trials or a test module's runs share one Ray). Ray kills
pooled workers idle for a second beyond the limit, so on a 2-CPU node the next run's Ray
Data tasks and small actors start fresh Python processes. Per process it prints the wall, the
machine's CPU-seconds (``/proc/stat``: alone on the machine) and the ``ray::`` processes seen
(sampled every 0.2 s); then the ratios of the means, six over Ray's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HZ = os.sysconf("SC_CLK_TCK")


def _machine_cpu_s() -> float:
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return (int(fields[0]) + int(fields[1]) + int(fields[2])) / HZ  # user, nice, system


def _ray_workers_seen(stop: threading.Event, seen: set[int]) -> None:
    while not stop.is_set():
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        if f.read(5) == b"ray::":
                            seen.add(int(p))
                except OSError:
                    pass
        time.sleep(0.2)


RUNS = """
import sys
from recdistill.config import load_config
from recdistill.experiment import run_experiment
from recdistill.ray_env import ensure_ray
from recdistill.smoke import smoke_test
ensure_ray()
config, rows, tmp, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
for i in range(runs):
    cfg = smoke_test(load_config(config, [f"data.rows={rows}", f"data.path={tmp}/data", f"run.dir={tmp}/run{i}",
                                          f"platform.signal_store={tmp}/store{i}", "tracking.wandb=disabled",
                                          "run.serving=off"]))
    run_experiment(cfg, log=lambda _: None)
"""


def one_process(limit: str | None, rows: int, runs: int, tmp: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_num_workers_soft_limit")}
    env.update(RAY_AUTH_MODE="disabled", WANDB_MODE="disabled")
    if limit is not None:
        env["RAY_num_workers_soft_limit"] = limit
    d = tmp / f"p{time.time_ns()}"
    d.mkdir()
    if (tmp / "data").exists():
        (d / "data").symlink_to(tmp / "data")
    cmd = [sys.executable, "-c", RUNS, str(ROOT / "jobs" / "configs" / "demo.yaml"), str(rows), str(d), str(runs)]
    stop, seen = threading.Event(), set()
    watcher = threading.Thread(target=_ray_workers_seen, args=(stop, seen), daemon=True)
    cpu0, t0 = _machine_cpu_s(), time.perf_counter()
    watcher.start()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _machine_cpu_s() - cpu0
    stop.set()
    watcher.join()
    if done.returncode:
        raise SystemExit(f"the runs failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if not (tmp / "data").exists():
        (d / "data").rename(tmp / "data")
    return {"wall_s": wall, "cpu_s": cpu, "ray_processes": len(seen)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="processes of each setting, alternating")
    p.add_argument("--runs", type=int, default=3, help="experiments one after another in each process")
    p.add_argument("--rows", type=int, default=20_000, help="rows of the synthetic log")
    args = p.parse_args()
    cpus = os.cpu_count() or 1
    settings = {"ray default": None, "six": "6"}
    out: dict[str, list[dict[str, float]]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        one_process(None, args.rows, 1, Path(d))  # writes the log once; not counted
        for i in range(args.repeats):
            for name, limit in settings.items():
                r = one_process(limit, args.rows, args.runs, Path(d))
                out[name].append(r)
                print(f"{i + 1} {name:>11}: {args.runs} runs, wall {r['wall_s']:6.1f} s, CPU {r['cpu_s']:6.1f} s, "
                      f"{r['ray_processes']:3d} ray:: processes", flush=True)
    mean = {k: {m: statistics.mean(r[m] for r in v) for m in ("wall_s", "cpu_s", "ray_processes")}
            for k, v in out.items()}
    base, ours = mean["ray default"], mean["six"]
    print(f"six / Ray's default ({cpus} CPUs, means of {args.repeats}): wall {ours['wall_s'] / base['wall_s']:.2f}×, "
          f"CPU {ours['cpu_s'] / base['cpu_s']:.2f}×, ray:: processes {ours['ray_processes'] / base['ray_processes']:.2f}×")


if __name__ == "__main__":
    main()
