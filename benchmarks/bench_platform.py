"""The Ray platform's costs, each next to a baseline measured in the same process.

    .venv/bin/python benchmarks/bench_platform.py [--rows 1000000] [--students 8]

1. Throughput: one student (raw + distilled) trained through the platform (Ray Data
   stream → Ray Train worker, fixed Ray costs and evaluation included) vs a minimal
   inline PyTorch loop on the same model, rows and teacher logits (target ratio ≥ 0.8).
2. 1-to-N: wall time of teacher + N students vs teacher + 1 student; the marginal cost
   of each extra student vs that student's own training time (target ≤ 1.15×).
3. Co-training baseline: the same N students where each runs the teacher's forward pass
   itself on its batches (no hub), vs the hub's student phase.
4. Reuse: the N-student run again with the same teacher key: teacher steps and wall time.

Figures go to stdout and runs/bench/platform.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recdistill.config import ExperimentConfig, load_config
from recdistill.data.tensors import TensorLog
from recdistill.train.plan import feature_spec, student_members


def _config(args: argparse.Namespace, n: int, name: str, reuse: bool) -> ExperimentConfig:
    ov = [f"data.rows={args.rows}", "data.path=runs/bench/data", "platform.signal_store=runs/bench/store",
          f"run.name=bench/{name}", f"platform.reuse_signals={str(reuse).lower()}",
          "run.overwrite=true"]  # each benchmark run measures afresh
    cfg = load_config("jobs/configs/demo.yaml", ov)
    base = cfg.students[0]
    from dataclasses import replace

    students = [replace(base, name=f"s{i}", epochs=1) for i in range(n)]
    return replace(cfg, students=students)


def _window(cfg: ExperimentConfig, key: str) -> tuple[Any, TensorLog, torch.Tensor]:
    """The students' window as in-memory tensors with the stored teacher logits (the baseline's input)."""
    from recdistill.engine.prepare import prepare_log
    from recdistill.data.tensors import collect
    from recdistill.data.windows import STUDENT_WINDOW
    from recdistill.signals.kinds import LOGIT
    from recdistill.signals.store import SignalStore
    from recdistill.train.plan import sequence_length

    prepared = prepare_log(cfg)
    # prepare_log tags the train split with its windows (and orders it) already
    data = collect(prepared.splits["train"], prepared.schema, sequence_length(cfg))
    data = data.take(torch.from_numpy(np.flatnonzero((data.window == STUDENT_WINDOW).numpy())))
    store = SignalStore(cfg.platform.signal_store)
    sid = store.committed(key)
    if sid is None:
        raise RuntimeError(f"teacher {key} has no committed signals in {store.uri}")
    blocks, _ = store.scan(sid)
    sig = store.read_range([b for b in blocks if b.window == STUDENT_WINDOW], 0, 2 ** 62)
    sid, z = sig.column("row_id").to_numpy(), sig.column(LOGIT).to_numpy()
    ids = data.row_id.numpy()
    pos = np.minimum(np.searchsorted(sid, ids), len(sid) - 1)
    zt = np.where(sid[pos] == ids, z[pos], np.nan).astype(np.float32)
    return prepared, data, torch.from_numpy(zt)


def _inline(members: list[Any], data: TensorLog, zt: torch.Tensor, teacher: Any = None) -> float:
    """Minimal loop per member over its own sample: forward, loss, backward, step.
    With ``teacher``, each member first runs the teacher's forward on its batch (co-training)."""
    from recdistill.data.sampling import model_sample_mask
    from recdistill.train.loop import optimizers

    t0 = time.perf_counter()
    for m in members:
        keep = model_sample_mask(data.row_id.numpy(), data.label.numpy(), m.ratio, m.negative_keep, m.seed)
        d = data.take(torch.from_numpy(np.flatnonzero(keep)))
        z = zt[torch.from_numpy(np.flatnonzero(keep))]
        opts = optimizers(m.model, m.lr, m.embedding_lr)
        for s in range(0, len(d), m.batch_size):
            cat, dense, seq, y = (d.cat[s:s + m.batch_size], d.dense[s:s + m.batch_size],
                                  d.seq[s:s + m.batch_size], d.label[s:s + m.batch_size])
            zb = z[s:s + m.batch_size]
            if teacher is not None and m.uses_teacher:
                with torch.no_grad():
                    zb = teacher(cat, dense, seq)[0]
            main, aux = m.model(cat, dense, seq)
            if m.uses_teacher:
                loss = m.objective(main, aux, True, y, torch.nan_to_num(zb), ~torch.isnan(zb))["total"]
            else:
                loss = m.objective(main, aux, True, y)["total"]
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in opts:
                o.step()
    return time.perf_counter() - t0


def _load_teacher(cfg: ExperimentConfig, prepared: Any, checkpoint: str) -> Any:
    from recdistill.train.plan import build_model, teacher_init_seed
    from recdistill.transfer.augment import load_teacher_state

    spec = feature_spec(prepared.schema, prepared.preprocessor.buckets)
    teacher = build_model(spec, cfg.teacher, "single", teacher_init_seed(cfg))
    teacher.load_state_dict(load_teacher_state(checkpoint))
    return teacher.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--students", type=int, default=8)
    args = p.parse_args()
    from recdistill.experiment import run_experiment

    quiet = lambda _: None  # noqa: E731
    out: dict[str, Any] = {"rows": args.rows, "students": args.students}

    one = run_experiment(_config(args, 1, "one", reuse=False), log=quiet)
    plat = one["platform"]
    own = one["students"][0]["train_seconds_raw"] + one["students"][0]["train_seconds_distill"]
    cfg1 = _config(args, 1, "one", reuse=False)
    prepared, data, zt = _window(cfg1, plat["teacher_key"])
    spec = feature_spec(prepared.schema, prepared.preprocessor.buckets)
    members = student_members(prepared.cfg, spec, [0])  # the resolved config: auto keys sized as the run's
    inline_s = _inline(members, data, zt)
    rows = sum(one["students"][0]["rows"] for _ in range(2))
    w = plat["student_worker_s"]
    train_s = w["data_s"] + w["feed_s"]
    fixed = plat["students_s"] - train_s - w["checkpoint_s"] - w["eval_s"]
    out["throughput"] = {"rows_trained": rows, "platform_students_wall_s": plat["students_s"],
                         "worker_breakdown_s": w, "ray_fixed_s": fixed,
                         "ratio_training_pass": inline_s / train_s,
                         "platform_member_compute_s": own, "inline_s": inline_s,
                         "ratio_wall": inline_s / plat["students_s"], "ratio_compute": inline_s / own}
    print(f"[1] throughput, one student raw+distilled on {rows:,} rows: platform {rows / plat['students_s']:,.0f} "
          f"samples/s wall incl. Ray fixed costs and eval ({plat['students_s']:.1f} s), inline loop "
          f"{rows / inline_s:,.0f} samples/s ({inline_s:.1f} s): ratio {inline_s / plat['students_s']:.2f} "
          f"(compute only {inline_s / own:.2f})")
    print(f"    inside the worker: stream read + tensors {w['data_s']:.1f} s, training {w['feed_s']:.1f} s "
          f"(pass ratio {inline_s / train_s:.2f}), checkpoints {w['checkpoint_s']:.1f} s, scoring the test split "
          f"{w['eval_s']:.1f} s; Ray Train start/stop and the rest {fixed:.1f} s")

    many = run_experiment(_config(args, args.students, "many", reuse=False), log=quiet)
    marginal = (many["seconds"] - one["seconds"]) / (args.students - 1)
    own_mean = np.mean([s["train_seconds_raw"] + s["train_seconds_distill"] for s in many["students"]])
    out["one_to_n"] = {"wall_1_s": one["seconds"], f"wall_{args.students}_s": many["seconds"],
                       "marginal_s": marginal, "own_s_alone": own, "own_s_mean_in_group": float(own_mean),
                       "ratio": marginal / own}
    print(f"[2] 1-to-N: teacher + 1 student {one['seconds']:.1f} s, teacher + {args.students} students "
          f"{many['seconds']:.1f} s; marginal {marginal:.1f} s per student vs its own training {own:.1f} s alone: "
          f"{marginal / own:.2f}×")

    teacher = _load_teacher(prepared.cfg, prepared, many["teacher"]["checkpoint"])
    from recdistill.engine.prepare import resolved_if_known

    cfgn = resolved_if_known(_config(args, args.students, "many", reuse=False))  # a synthetic log: known
    co_s = _inline(student_members(cfgn, spec, list(range(args.students))), data, zt, teacher=teacher)
    hub_s = many["platform"]["students_s"]
    out["cotraining"] = {"hub_students_wall_s": hub_s, "cotraining_students_s": co_s, "ratio": co_s / hub_s}
    print(f"[3] {args.students} students: hub (signals recorded once) {hub_s:.1f} s wall vs each running the "
          f"teacher's forward itself {co_s:.1f} s (in-process, no Ray costs): {co_s / hub_s:.2f}×")

    again = run_experiment(_config(args, args.students, "again", reuse=True), log=quiet)
    out["reuse"] = {"teacher_steps": again["platform"]["teacher_steps"], "wall_s": again["seconds"],
                    "first_wall_s": many["seconds"]}
    print(f"[4] same teacher key again: {again['platform']['teacher_steps']} teacher steps, {again['seconds']:.1f} s "
          f"vs {many['seconds']:.1f} s the first time")
    Path("runs/bench").mkdir(parents=True, exist_ok=True)
    Path("runs/bench/platform.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
