"""The teacher of a batch run on Ray: reused from the signal store when its signals are
complete there, else trained by Ray Train (``train.teacher_loop``) into a fresh
generation of its key, under a lease so two runs never train one key at once.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from recdistill.config import ExperimentConfig, to_dict
from recdistill.data.windows import HISTORY, STUDENT_WINDOW
from recdistill.engine.ray_run import RayRun, eval_datasets
from recdistill.engine.trainer import final_checkpoint, final_weights, model_checkpoint, ray_trainer
from recdistill.signals.hub import completed
from recdistill.signals.lease import reuse_or_lease
from recdistill.signals.publish import Publisher
from recdistill.signals.store import new_generation, signal_id
from recdistill.train.plan import teacher_sample_seed


def teacher_stage(cfg: ExperimentConfig, run: RayRun, log: Callable[[str], None],
                  timings: dict[str, float]) -> tuple[dict[str, Any], int, bool]:
    """The teacher's stored info, steps run here and whether it was reused: its signals are
    looked up in the store and it is trained only when they are missing. A run that finds
    another run training the same key waits for that run's signals instead of training
    it a second time (a lease in the store)."""
    key, store, hub = run.key, run.store, run.hub
    windows = [(0, HISTORY), (0, STUDENT_WINDOW)]
    done: list[dict[str, Any]] = []

    def stored() -> dict[str, Any] | None:
        info = store.teacher_info(key) if cfg.platform.reuse_signals else None
        if info is None:
            return None
        got = completed(hub, signal_id(key, info["generation"]), windows)
        done[:] = got or []
        return info if got else None

    p = cfg.platform
    info, lease = reuse_or_lease(store, key, run.experiment, p.lease_ttl_s, p.lease_poll_s, stored, log,
                                 p.lease_wait_s)
    if lease is not None:
        with lease:
            info, steps = _train_teacher(cfg, run, log, timings)
        return info, steps, False
    run.signal_id = signal_id(key, info["generation"])
    cut = info.get("config", {}).get("history_fraction")
    log(f"[teacher] reusing stored signals of teacher {key} ({sum(d['rows'] for d in done):,} rows, "
        f"{sum(d['blocks'] for d in done)} blocks): 0 teacher steps"
        + (f"; it was recorded with teacher.history_fraction={cut:g}, which does not change it here (its "
           f"signal_auc_history/window are for that cut)" if cut is not None and cut != cfg.teacher.history_fraction
           else ""))
    return info, 0, True


def _train_teacher(cfg: ExperimentConfig, run: RayRun, log: Callable[[str], None],
                   timings: dict[str, float]) -> tuple[dict[str, Any], int]:
    """Train the teacher into a fresh generation of its key and commit it (under the lease)."""
    from recdistill.data.sampling import model_sample
    from recdistill.train.teacher_loop import teacher_loop

    t, key, store, hub = cfg.teacher, run.key, run.store, run.hub
    generation = new_generation()
    run.signal_id = signal_id(key, generation)
    t0 = time.perf_counter()
    teacher_ds = run.train_ds.map_batches(model_sample, batch_format="pyarrow", fn_kwargs={
        "ratio": t.sampling_ratio, "negative_keep": t.negative_keep_rate, "seed": teacher_sample_seed(cfg)})
    log(f"[teacher] training {t.arch} (key {key}, generation {generation}) on {cfg.platform.teacher_workers} "
        f"Ray Train worker(s)")
    result = ray_trainer(teacher_loop, f"teacher-{key}-{run.experiment}", cfg, {**run.base, "key": run.signal_id},
                      {"train": teacher_ds, **eval_datasets(run)}, cfg.platform.teacher_workers, run.storage,
                      run.callbacks("teacher")).fit()
    m = result.metrics
    for w in (0, STUDENT_WINDOW):
        Publisher(store, hub, run.signal_id).complete(0, w)
    scored = dict(m["teacher"])  # its test metrics; their row count is the test split's, not its training rows
    info = {**scored, "key": key, "generation": generation, "arch": t.arch, "config": to_dict(t), "steps": m["steps"],
            "rows": m["rows"], "test_rows": scored.pop("rows", None),
            "samples_per_s": m["rows"] / m["seconds"] if m["seconds"] else float("nan"),
            "train_seconds": m["seconds"], "checkpoint_seconds": m["checkpoint_s"], "eval_seconds": m["eval_s"],
            "resumed": m["resumed"], "checkpoint": model_checkpoint(result)}
    if "oracle" in m:
        info["oracle"] = m["oracle"]
    weights = final_weights(final_checkpoint(result), "teacher")
    if weights is not None:  # beside its signals: a run reusing them still writes the teacher's artifact
        store.put_file(weights, store.teacher_weights_path(key, generation))
    store.commit_teacher(key, info)
    timings["teacher_s"] = time.perf_counter() - t0
    log(f"[teacher] AUC {info['auc']:.4f} after {m['steps']} steps ({info['samples_per_s']:,.0f} samples/s, "
        f"{timings['teacher_s']:.1f} s with Ray's fixed costs); stopped in epoch {info['stopped_epoch']}/{t.epochs}"
        + (f"; trained on after its recording pass: AUC {info['final']['auc']:.4f} (η uses the recorded one)"
           if "final" in info else ""))
    return info, m["steps"]
