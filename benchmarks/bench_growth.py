"""How a 1→N run grows with the log: wall per 1M rows and peak memory at several sizes,
next to an inline loop training the same models on as many rows in this process.

    .venv/bin/python benchmarks/bench_growth.py [--rows 1000000,3000000,10000000]
        [--config jobs/configs/demo.yaml] [--out .tmp/bench_growth] [overrides ...]
    .venv/bin/python benchmarks/bench_growth.py --rows 300000 --students 8,32 [overrides ...]

With ``--students``, the log size is the first of ``--rows`` and what grows is the number
of students: the config's first student cloned N times (``s0``, ``s1``, ...: the same
shape, their own seeds), each raw and distilled, teacher trained afresh in each run. The
table then has the wall of teacher + N students against the smallest N (goal for 8 → 32:
≤ 4.4×, the teacher paid once) and the marginal student's wall against one student's own
training time in the run (its raw and distilled models' train seconds; goal ≤ 1.15×), and
against its own training plus its share of the group's scoring (its models' validation and
test-split passes, which a student trained alone pays too: the group's ``valid_s`` and
``eval_s`` over its members).

Per size: the synthetic log is written first (``recdistill synth``, not timed: a user's log
exists before the run), then ``recdistill run`` on it in a fresh process (the Ray engine,
teacher trained, every student raw and distilled), its wall measured here and its peak
memory sampled every 2 s as the processes' own memory plus the object store's: the summed
anonymous and file-backed PSS of its whole process tree (the driver, Ray's own processes and
every worker), and the growth of /dev/shm's used bytes since the start, where Ray keeps its
object store (so run nothing else that writes there). A process's plain PSS would count the
store's pages only while some live process maps them: pages written by a pooled worker that
has since exited (a materialised split) count nowhere until a reader maps them again, so a
run's total PSS rose and fell as the training worker read the test split. Each sample walks
every process's page tables (``smaps_rollup``): at 0.5 s the sampler took 17% of a core
beside a 10M-row run on 2 cores, hence 2 s.

Inline baseline at each size, in this process: the run's teacher and its students (raw and
distilled) built from its resolved config and trained for as many steps as the run trained
each, at its batch sizes and learning rates, on random tensors of the run's feature spec
(no reading, no Ray, no evaluation). ``inline / platform`` is that training time over the
run's whole wall, so it shows what the platform adds around the same arithmetic.
Figures go to stdout and ``<out>/growth.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch


def _tree_memory(root: int) -> int:
    """Summed anonymous and file-backed PSS (bytes) of ``root`` and all its descendants, from
    /proc: their own memory, without the object store's shared-memory pages (``_store_bytes``)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Pss_Anon:", "Pss_File:")):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _store_bytes() -> int:
    """Bytes used in /dev/shm, where Ray's object store lives on Linux."""
    return shutil.disk_usage("/dev/shm").used


def run_measured(cmd: list[str], log: Path, whole_tree: bool = False) -> tuple[float, dict[str, int], int]:
    """Run ``cmd``; (wall s, peak memory bytes, return code). Peaks: ``total`` (processes plus
    object store, at the same sample), ``processes`` and ``object_store`` (each its own peak).
    The tree is ``cmd``'s, or with ``whole_tree`` this process's (a Ray cluster started here is
    not ``cmd``'s child)."""
    peak = {"total": 0, "processes": 0, "object_store": 0}
    base = _store_bytes()
    with log.open("w") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                own = _tree_memory(os.getpid() if whole_tree else proc.pid)
                store = max(0, _store_bytes() - base)
                peak.update(total=max(peak["total"], own + store), processes=max(peak["processes"], own),
                            object_store=max(peak["object_store"], store))
                done.wait(2.0)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = proc.wait()
        wall = time.perf_counter() - t
        done.set()
        th.join()
    return wall, peak, rc


def inline_seconds(run_dir: Path, results: dict[str, Any]) -> float:
    """The run's teacher and each student (raw and distilled) trained for as many steps as
    the run trained them, with the batch sizes and learning rates it resolved, on random
    tensors of its feature spec (the synthetic schema and its encoding, as the run built them)."""
    from recdistill.config import load_config
    from recdistill.data.preprocess import build_preprocessor
    from recdistill.data.synthetic import synthetic_schema
    from recdistill.data.tensors import TensorLog
    from recdistill.distill.objective import Objective
    from recdistill.train.loop import fit
    from recdistill.train.plan import build_model, feature_spec, sequence_length

    cfg = load_config(str(run_dir / "config.yaml"), [])
    derived = results["data"]["derived"]
    schema = synthetic_schema(cfg.data.synthetic)
    spec = feature_spec(schema, build_preprocessor(schema, cfg.data).buckets)
    seq_len = sequence_length(cfg)
    g = torch.Generator().manual_seed(0)

    def data(n: int) -> TensorLog:
        seq = (torch.stack([torch.randint(0, spec.buckets[f], (n, seq_len), generator=g)
                            for f in spec.sequence_fields], 1) if spec.sequence_fields else None)
        return TensorLog(cat=torch.stack([torch.randint(0, b, (n,), generator=g) for b in spec.buckets], 1),
                         dense=torch.randn(n, spec.num_dense, generator=g), seq=seq,
                         label=(torch.rand(n, generator=g) < 0.2).float(), sample_rate=torch.ones(n),
                         row_id=torch.arange(n))

    cpu = torch.device("cpu")
    t = derived["teacher"]
    jobs = [(cfg.teacher, "single", t, results["teacher"]["steps"], None)]
    for s_cfg, s in zip(cfg.students, results["students"]):
        d = derived["students"][s_cfg.name]
        if not s.get("raw_reused"):
            jobs.append((s_cfg, s_cfg.towers, d, s["steps_raw"], None))
        jobs.append((s_cfg, s_cfg.towers, d, s["steps_distill"], Objective(alpha=s_cfg.alpha)))
    total = 0.0
    for m_cfg, towers, resolved, steps, obj in jobs:
        rows = int(steps) * int(resolved["batch_size"])
        if rows <= 0:
            continue
        model = build_model(spec, m_cfg, towers, 0)
        d = data(rows)
        start = time.perf_counter()
        fit(model, d, epochs=1, batch_size=int(resolved["batch_size"]), lr=float(resolved["lr"]),
            embedding_lr=float(resolved["embedding_lr"]), device=cpu, objective=obj,
            teacher_logits=torch.randn(rows) if obj is not None else None)
        total += time.perf_counter() - start
    return total


def synth(exe: str, args: argparse.Namespace, n: int, data: Path) -> None:
    """The synthetic log of ``n`` rows at ``data``, written once (not timed)."""
    if not (data / "_manifest.json").exists():
        print(f"[{n:,} rows] writing the synthetic log (not timed)", flush=True)
        subprocess.run([exe, "synth", "--config", args.config, "--out", str(data), "--quiet", f"data.rows={n}",
                        *args.overrides], check=True, stdout=subprocess.DEVNULL)


def measured_run(exe: str, args: argparse.Namespace, config: str, n: int, data: Path, run_dir: Path,
                 log: Path, overrides: bool = True, whole_tree: bool = False) -> tuple[float, dict[str, int], dict[str, Any]]:
    """``recdistill run`` of ``config`` on the log at ``data``, teacher trained afresh: (wall
    s, peak memory bytes as ``run_measured`` gives them, its results). ``overrides``: add the command line's (False for a
    config written with them)."""
    cmd = [exe, "run", config, "--overwrite", f"data.rows={n}", f"data.path={data}", f"run.dir={run_dir}",
           f"platform.signal_store={run_dir / 'store'}", "platform.reuse_signals=false", "tracking.wandb=disabled",
           "run.serving=off", *(args.overrides if overrides else [])]
    wall, peak, rc = run_measured(cmd, log, whole_tree)
    if rc:
        raise SystemExit(f"recdistill run failed (rc {rc}); see {log}")
    return wall, peak, json.loads((run_dir / "results.json").read_text())


def phases(results: dict[str, Any]) -> dict[str, float]:
    """A run's phase timings (``platform.*_s``) from its results."""
    return {k: v for k, v in results.get("platform", {}).items() if k.endswith("_s") and isinstance(v, float)}


def memory_gib(peak: dict[str, int]) -> dict[str, float]:
    """``run_measured``'s peaks in GiB, as the tables show them."""
    return {f"peak_{'memory' if k == 'total' else k}_gib": v / 2 ** 30 for k, v in peak.items()}


def students_growth(args: argparse.Namespace, exe: str, n: int, counts: list[int]) -> None:
    """Teacher + N students for each N of ``counts`` on one log (see the module docstring)."""
    from dataclasses import replace

    from recdistill.config import dump_config, load_config

    data = args.out / f"data-{n}"
    synth(exe, args, n, data)
    # the overrides first (they may name the config's own students), then the clones
    base_cfg = load_config(args.config, args.overrides)
    rows: list[dict[str, Any]] = []
    for k in counts:
        # each clone its own seeds (no borrowed seed_name); pairs named the config's own students
        cfg = replace(base_cfg, students=[replace(base_cfg.students[0], name=f"s{i}", seed_name=None)
                                          for i in range(k)], run=replace(base_cfg.run, pairs=[]))
        config = args.out / f"students-{k}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(dump_config(cfg))
        print(f"[{n:,} rows, {k} students] recdistill run …", flush=True)
        wall, peak, results = measured_run(exe, args, str(config), n, data, args.out / f"run-{n}-s{k}",
                                           args.out / f"run-{n}-s{k}.log", overrides=False)
        own = [s["train_seconds_raw"] + s["train_seconds_distill"] for s in results["students"]]
        worker = results["platform"]["student_worker_s"]
        # a student's share of the group's validation and test scoring: its two models of 2k
        scoring = (worker["valid_s"] + worker["eval_s"]) / k
        rows.append({"students": k, "wall_s": wall, **memory_gib(peak), "own_s_mean": sum(own) / len(own),
                     "scoring_s_mean": scoring, "phases_s": phases(results), "student_worker_s": worker})
        print(f"[{k} students] wall {wall:.0f} s, peak memory {rows[-1]['peak_memory_gib']:.2f} GiB, a student's own training "
              f"{rows[-1]['own_s_mean']:.1f} s, its scoring {scoring:.2f} s", flush=True)
    base = rows[0]
    # the marginal student from the walls, and from the students' phase alone (the teacher's
    # stage is the same work in every run: its noise is left out of the second)
    print(f"\n| students | wall s | vs {base['students']} students | marginal student s (wall / students' phase) | "
          f"own training s | own scoring s | vs its own training | vs its own training + scoring | peak memory GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        extra = r["students"] - base["students"]
        marginal = (r["wall_s"] - base["wall_s"]) / extra if extra else float("nan")
        phase = (r["phases_s"]["students_s"] - base["phases_s"]["students_s"]) / extra if extra else float("nan")
        solo = r["own_s_mean"] + r["scoring_s_mean"]
        r.update(marginal_s=marginal, marginal_phase_s=phase, marginal_over_own=marginal / r["own_s_mean"],
                 marginal_over_solo=marginal / solo, phase_over_own=phase / r["own_s_mean"], phase_over_solo=phase / solo)
        print(f"| {r['students']} | {r['wall_s']:.0f} | {r['wall_s'] / base['wall_s']:.2f} | {marginal:.1f} / {phase:.1f} | "
              f"{r['own_s_mean']:.2f} | {r['scoring_s_mean']:.2f} | {r['marginal_over_own']:.2f} / "
              f"{r['phase_over_own']:.2f} | {r['marginal_over_solo']:.2f} / {r['phase_over_solo']:.2f} | "
              f"{r['peak_memory_gib']:.2f} |")
    (args.out / "students.json").write_text(json.dumps(rows, indent=1))
    print(f"\nfigures: {args.out / 'students.json'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1000000,3000000,10000000", help="comma-separated log sizes")
    p.add_argument("--config", default="jobs/configs/demo.yaml")
    p.add_argument("--out", type=Path, default=Path(".tmp/bench_growth"))
    p.add_argument("--no-inline", action="store_true", help="skip the inline baseline")
    p.add_argument("--students", default="", help="comma-separated student counts (e.g. 8,32): grow the students, "
                                                 "not the log (at the first --rows size)")
    p.add_argument("overrides", nargs="*", help="dotted overrides for every run, e.g. teacher.epochs=1")
    args = p.parse_args()
    exe = str(Path(sys.executable).with_name("recdistill"))
    sizes = [int(x) for x in args.rows.split(",") if x]
    if args.students:
        students_growth(args, exe, sizes[0], [int(x) for x in args.students.split(",") if x])
        return
    out: list[dict[str, Any]] = []
    for n in sizes:
        data, run_dir = args.out / f"data-{n}", args.out / f"run-{n}"
        synth(exe, args, n, data)
        print(f"[{n:,} rows] recdistill run …", flush=True)
        wall, peak, results = measured_run(exe, args, args.config, n, data, run_dir, args.out / f"run-{n}.log")
        row = {"rows": n, "wall_s": wall, "wall_per_1m_s": wall / n * 1e6, **memory_gib(peak),
               "teacher_samples_per_s": results["teacher"].get("samples_per_s"),
               "phases_s": phases(results)}
        if not args.no_inline:
            row["inline_s"] = inline_seconds(run_dir, results)
            row["inline_over_platform"] = row["inline_s"] / wall
        out.append(row)
        print(f"[{n:,} rows] wall {wall:.0f} s ({row['wall_per_1m_s']:.1f} s per 1M rows), peak memory "
              f"{row['peak_memory_gib']:.2f} GiB (processes {row['peak_processes_gib']:.2f}, object store "
              f"{row['peak_object_store_gib']:.2f})" + (f", inline {row['inline_s']:.0f} s → {row['inline_over_platform']:.2f}"
                                                  if "inline_s" in row else ""), flush=True)
    base = out[0]
    print("\n| rows | wall s | s per 1M rows | vs linear from the first | peak memory GiB | processes GiB | "
          "object store GiB | inline / platform |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out:
        lin = r["wall_per_1m_s"] / base["wall_per_1m_s"]
        print(f"| {r['rows']:,} | {r['wall_s']:.0f} | {r['wall_per_1m_s']:.1f} | {lin:.2f} | {r['peak_memory_gib']:.2f} | "
              f"{r['peak_processes_gib']:.2f} | {r['peak_object_store_gib']:.2f} | "
              f"{r.get('inline_over_platform', float('nan')):.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "growth.json").write_text(json.dumps(out, indent=1))
    print(f"\nfigures: {args.out / 'growth.json'}")


if __name__ == "__main__":
    main()
