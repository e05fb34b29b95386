"""The stages every batch Ray pipeline shares (the 1→N experiment, the transfer stage):
the run's start (splits, store, hub), the teacher — reused from the signal store or
trained by Ray Train into it — and the distill stream the students read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from recdistill.config import ExperimentConfig, to_dict
from recdistill.data.reduce import reduce_blocks
from recdistill.data.windows import HISTORY, STUDENT_WINDOW, WINDOW
from recdistill.engine.prologue import driver_name, open_run, prepare
from recdistill.engine.trainer import model_checkpoint, ray_trainer
from recdistill.signals.hub import completed, get_hub, hub_name
from recdistill.signals.join import coverage, join_signals
from recdistill.signals.lease import reuse_or_lease
from recdistill.signals.store import SignalStore, new_generation, signal_id
from recdistill.train.keys import teacher_key
from recdistill.train.plan import check_validation, teacher_sample_seed


def window_rows(batch: pa.Table, window: int) -> pa.Table:
    return batch.filter(pa.compute.equal(batch.column(WINDOW), window))


def sum_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


@dataclass
class RayRun:
    """What every Ray pipeline shares once the log is prepared: splits, store, hub, names."""

    prepared: Any
    train_ds: Any  # the train split tagged history / students' window
    test_ds: Any  # materialised: every model scores it
    valid_ds: Any  # materialised: every model validates on it (no rows: no validation)
    valid_rows: int
    store: SignalStore
    hub: Any
    key: str  # the teacher's key
    experiment: str
    storage: Path
    base: dict[str, Any]  # the loop config every Train worker gets
    t_start: float
    signal_id: str = ""  # the teacher's signals: ``<key>/<generation>``, set by teacher_stage
    cfg: Any = None  # the resolved config (``PreparedLog.cfg``): every later stage uses this one

    @property
    def schema(self) -> Any:
        return self.prepared.schema


def start_run(cfg: ExperimentConfig, log: Callable[[str], None]) -> RayRun:
    """Write the config, join or start Ray, prepare the log and the signal hub."""
    import ray

    opened = open_run(cfg)
    res = ray.cluster_resources()
    prepared = prepare(cfg, log, f" on Ray ({res.get('CPU', 0):.0f} CPUs, {res.get('GPU', 0):.0f} GPUs)")
    cfg = prepared.cfg
    train_ds = prepared.splits["train"]
    # Held out once into the object store (sharded across nodes, not on the driver): the
    # teacher and every student group score it, and training workers that hold every CPU
    # of a small node cannot starve a lazy read of it.
    test_ds = prepared.splits["test"].materialize()
    valid_ds = prepared.splits["valid"].materialize()
    valid_rows = valid_ds.count()
    check_validation(cfg, valid_rows)
    key = teacher_key(cfg)
    store = SignalStore(cfg.platform.signal_store)
    experiment = driver_name(cfg)
    hub = get_hub(experiment, store.uri)
    base = {"cfg": to_dict(cfg), "schema": prepared.schema, "buckets": prepared.preprocessor.buckets, "key": key,
            "store": store.uri, "hub": hub_name(experiment), "valid_rows": valid_rows}
    return RayRun(prepared, train_ds, test_ds, valid_ds, valid_rows, store, hub, key, experiment,
                  opened.out / "ray_train", base, opened.t_start, cfg=cfg)


def eval_datasets(run: RayRun) -> dict[str, Any]:
    """The held-out splits every Train run gets: test, and valid when it has rows."""
    return {"test": run.test_ds, **({"valid": run.valid_ds} if run.valid_rows else {})}


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
    import ray

    from recdistill.data.sampling import model_sample
    from recdistill.train.ray_workers import teacher_loop

    t, key, store, hub = cfg.teacher, run.key, run.store, run.hub
    generation = new_generation()
    run.signal_id = signal_id(key, generation)
    t0 = time.perf_counter()
    teacher_ds = run.train_ds.map_batches(model_sample, batch_format="pyarrow", fn_kwargs={
        "ratio": t.sampling_ratio, "negative_keep": t.negative_keep_rate, "seed": teacher_sample_seed(cfg)})
    log(f"[teacher] training {t.arch} (key {key}, generation {generation}) on {cfg.platform.teacher_workers} "
        f"Ray Train worker(s)")
    result = ray_trainer(teacher_loop, f"teacher-{key}-{run.experiment}", cfg, {**run.base, "key": run.signal_id},
                      {"train": teacher_ds, **eval_datasets(run)}, cfg.platform.teacher_workers, run.storage).fit()
    m = result.metrics
    for w in (0, STUDENT_WINDOW):
        ray.get(hub.mark_complete.remote(run.signal_id, 0, w))
    scored = dict(m["teacher"])  # its test metrics; their row count is the test split's, not its training rows
    info = {**scored, "key": key, "generation": generation, "arch": t.arch, "config": to_dict(t), "steps": m["steps"],
            "rows": m["rows"], "test_rows": scored.pop("rows", None),
            "samples_per_s": m["rows"] / m["seconds"] if m["seconds"] else float("nan"),
            "train_seconds": m["seconds"], "checkpoint_seconds": m["checkpoint_s"], "eval_seconds": m["eval_s"],
            "resumed": m["resumed"], "checkpoint": model_checkpoint(result)}
    if "oracle" in m:
        info["oracle"] = m["oracle"]
    store.commit_teacher(key, info)
    timings["teacher_s"] = time.perf_counter() - t0
    log(f"[teacher] AUC {info['auc']:.4f} after {m['steps']} steps ({info['samples_per_s']:,.0f} samples/s, "
        f"{timings['teacher_s']:.1f} s with Ray's fixed costs); stopped in epoch {info['stopped_epoch']}/{t.epochs}"
        + (f"; trained on after its recording pass: AUC {info['final']['auc']:.4f} (η uses the recorded one)"
           if "final" in info else ""))
    return info, m["steps"]


def distill_stream(run: RayRun, log: Callable[[str], None], timings: dict[str, float]) -> tuple[Any, dict[str, int]]:
    """The window's rows joined with the teacher's logits once, by row id, materialised in
    the object store; with its coverage (rows, rows with a signal)."""
    import ray

    t0 = time.perf_counter()
    # every window the teacher recorded: a stored teacher may have been cut elsewhere (the
    # key holds no history_fraction where it cannot change the teacher), and the join takes
    # only the blocks whose row ids overlap the students' rows
    blocks = []
    for w in (HISTORY, STUDENT_WINDOW):
        got = ray.get(run.hub.wait.remote(run.signal_id, 0, w, 600.0))
        if got is None:
            raise RuntimeError(f"teacher {run.signal_id}: window {w} signals not complete after 600 s")
        blocks += got
    stream = (run.train_ds.map_batches(window_rows, batch_format="pyarrow", fn_kwargs={"window": STUDENT_WINDOW})
              .map_batches(join_signals, batch_format="pyarrow",
                           fn_kwargs={"store_uri": run.store.uri, "blocks": blocks})
              .materialize())
    cov = reduce_blocks(stream, coverage, sum_counts) or {"rows": 0, "with_signal": 0}
    timings["stream_s"] = time.perf_counter() - t0
    log(f"[stream] window rows joined with teacher signals: {cov['rows']:,} rows, "
        f"{cov['with_signal']:,} with a signal ({cov['rows'] - cov['with_signal']:,} without: the aux loss is "
        f"masked there), {timings['stream_s']:.1f} s")
    return stream, cov
