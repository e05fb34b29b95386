"""One experiment on Ray: Ray Data → Ray Train teacher → signal hub → distill stream →
student groups (Ray Train) → the same results as the single-process engine.

1. Ray Data reads, splits and encodes the log (lazy, sharded; nothing gathered here);
   the train split is tagged history / students' window.
2. The teacher key is looked up in the signal store; when its signals are complete the
   teacher step is skipped. Otherwise a ``TorchTrainer`` trains the teacher on its sample
   (DDP over ``platform.teacher_workers``), writing forward-distillation logits per
   block to the store and registering them with the hub.
3. The distill stream: the window's rows joined with the teacher's logits once, by row
   id, and materialised in the object store; every student group reads it.
4. Student groups (``platform.students_per_group``) run as concurrent one-worker Ray
   Train runs; each trains its students raw and distilled in one pass per epoch.

Every model is validated on the valid split (materialised once, sharded to the workers,
merged across them) and stops as ``train.evaluate.EarlyStop`` says, as on the local engine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from recdistill.config import ExperimentConfig, to_dict
from recdistill.data.schema import ROW_ID
from recdistill.data.windows import HISTORY, STUDENT_WINDOW, WINDOW
from recdistill.results import transferability, write_results
from recdistill.signals.store import LOGIT, BlockMeta, SignalStore, new_generation, signal_id

_STORES: dict[str, SignalStore] = {}


def join_signals(batch: pa.Table, store_uri: str, blocks: list[dict[str, Any]]) -> pa.Table:
    """Add the teacher's logit to each row (NaN where the teacher has none), by row id.

    Reads only the signal blocks whose row-id range overlaps the batch's.
    """
    store = _STORES.setdefault(store_uri, SignalStore(store_uri))
    ids = batch.column(ROW_ID).to_numpy()
    logits = np.full(len(ids), np.nan, dtype=np.float32)
    if len(ids):
        sig = store.read_range([BlockMeta(**b) for b in blocks], int(ids.min()), int(ids.max()))
        if sig.num_rows:
            sid = sig.column(ROW_ID).to_numpy()
            pos = np.minimum(np.searchsorted(sid, ids), len(sid) - 1)
            found = sid[pos] == ids
            logits[found] = sig.column(LOGIT).to_numpy()[pos[found]]
    return batch.append_column(LOGIT, pa.array(logits, pa.float32()))


def _window_rows(batch: pa.Table, window: int) -> pa.Table:
    return batch.filter(pa.compute.equal(batch.column(WINDOW), window))


def _coverage(batch: pa.Table) -> dict[str, int]:
    z = batch.column(LOGIT).to_numpy(zero_copy_only=False)
    return {"rows": len(z), "with_signal": int((~np.isnan(z)).sum())}


def _sum_dicts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def _use_gpu(cfg: ExperimentConfig) -> bool:
    import ray

    if cfg.platform.use_gpu == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0 and cfg.run.device != "cpu"
    return cfg.platform.use_gpu == "yes"


def _trainer(fn: Callable, name: str, cfg: ExperimentConfig, loop_config: dict[str, Any], datasets: dict[str, Any],
             workers: int, storage: Path) -> Any:
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    from recdistill.train.ray_workers import TEST_HOOKS

    gpu = _use_gpu(cfg)
    env = {k: os.environ[k] for k in TEST_HOOKS if os.environ.get(k)}
    return TorchTrainer(
        fn, train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=gpu,
            resources_per_worker={"CPU": cfg.platform.cpus_per_worker, **({"GPU": 1} if gpu else {})}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage.resolve()),
            failure_config=ray.train.FailureConfig(max_failures=cfg.platform.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Train echoes every report and checkpoint path at INFO; the driver prints progress
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            worker_runtime_env={"env_vars": env} if env else None),
        datasets=datasets,
        # log (time) order within each shard: forward distillation and the students'
        # batches follow time, as in the single-process engine
        dataset_config=ray.train.DataConfig(execution_options=ExecutionOptions(preserve_order=True)))


def _model_checkpoint(result: Any) -> str | None:
    """Path of the run's last checkpoint that holds model state (the final one holds metrics)."""
    from recdistill.train.checkpoint import STATE_FILE

    for ckpt, _ in reversed(getattr(result, "best_checkpoints", None) or []):
        if os.path.exists(os.path.join(ckpt.path, STATE_FILE)):
            return ckpt.path
    return None


def _fit_group(fn: Callable, name: str, cfg: ExperimentConfig, loop_config: dict[str, Any], datasets: dict[str, Any],
               storage: Path) -> dict[str, Any]:
    result = _trainer(fn, name, cfg, loop_config, datasets, 1, storage).fit()
    return result.metrics


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

    from recdistill.data.log import prepare_log
    from recdistill.ray_env import ensure_ray
    from recdistill.run_dir import open_run_dir, write_resolved_config
    from recdistill.signals.hub import get_hub, hub_name
    from recdistill.signals.key import teacher_key
    from recdistill.train.plan import check_validation

    t_start = time.perf_counter()
    out = open_run_dir(cfg)
    ensure_ray()
    log(f"[data] preparing {cfg.data.source} log (splits {cfg.data.splits}) on Ray "
        f"({ray.cluster_resources().get('CPU', 0):.0f} CPUs, {ray.cluster_resources().get('GPU', 0):.0f} GPUs)")
    prepared = prepare_log(cfg, log=log)
    cfg = prepared.cfg
    write_resolved_config(cfg)
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
    # Unique per driver: Ray Train resumes a run whose name and storage path it has seen
    # before, which would silently restore a finished teacher and write no signals.
    experiment = f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    hub = get_hub(experiment, store.uri)
    base = {"cfg": to_dict(cfg), "schema": prepared.schema, "buckets": prepared.preprocessor.buckets, "key": key,
            "store": store.uri, "hub": hub_name(experiment), "valid_rows": valid_rows}
    return RayRun(prepared, train_ds, test_ds, valid_ds, valid_rows, store, hub, key, experiment, out / "ray_train",
                  base, t_start, cfg=cfg)


def eval_datasets(run: RayRun) -> dict[str, Any]:
    """The held-out splits every Train run gets: test, and valid when it has rows."""
    return {"test": run.test_ds, **({"valid": run.valid_ds} if run.valid_rows else {})}


def teacher_stage(cfg: ExperimentConfig, run: RayRun, log: Callable[[str], None],
                  timings: dict[str, float]) -> tuple[dict[str, Any], int, bool]:
    """The teacher's stored info, steps run here and whether it was reused: its signals are
    looked up in the store and it is trained only when they are missing. A run that finds
    another run training the same key waits for that run's signals instead of training
    it a second time (a lease in the store)."""
    import ray

    from recdistill.signals.lease import reuse_or_lease

    key, store, hub = run.key, run.store, run.hub

    def stored() -> dict[str, Any] | None:
        info = store.teacher_info(key) if cfg.platform.reuse_signals else None
        if info is None:
            return None
        sid = signal_id(key, info["generation"])
        done = [ray.get(hub.complete.remote(sid, 0, w)) for w in (HISTORY, STUDENT_WINDOW)]
        return info if all(d is not None for d in done) else None

    p = cfg.platform
    info, lease = reuse_or_lease(store, key, run.experiment, p.lease_ttl_s, p.lease_poll_s, stored, log,
                                 p.lease_wait_s)
    if lease is not None:
        with lease:
            info, steps = _train_teacher(cfg, run, log, timings)
        return info, steps, False
    run.signal_id = signal_id(key, info["generation"])
    done = [ray.get(hub.complete.remote(run.signal_id, 0, w)) for w in (HISTORY, STUDENT_WINDOW)]
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
    from recdistill.train.plan import teacher_sample_seed
    from recdistill.train.ray_workers import teacher_loop

    t, key, store, hub = cfg.teacher, run.key, run.store, run.hub
    generation = new_generation()
    run.signal_id = signal_id(key, generation)
    t0 = time.perf_counter()
    teacher_ds = run.train_ds.map_batches(model_sample, batch_format="pyarrow", fn_kwargs={
        "ratio": t.sampling_ratio, "negative_keep": t.negative_keep_rate, "seed": teacher_sample_seed(cfg)})
    log(f"[teacher] training {t.arch} (key {key}, generation {generation}) on {cfg.platform.teacher_workers} "
        f"Ray Train worker(s)")
    result = _trainer(teacher_loop, f"teacher-{key}-{run.experiment}", cfg, {**run.base, "key": run.signal_id},
                      {"train": teacher_ds, **eval_datasets(run)}, cfg.platform.teacher_workers, run.storage).fit()
    m = result.metrics
    for w in (0, STUDENT_WINDOW):
        ray.get(hub.mark_complete.remote(run.signal_id, 0, w))
    scored = dict(m["teacher"])  # its test metrics; their row count is the test split's, not its training rows
    info = {**scored, "key": key, "generation": generation, "arch": t.arch, "config": to_dict(t), "steps": m["steps"],
            "rows": m["rows"], "test_rows": scored.pop("rows", None),
            "samples_per_s": m["rows"] / m["seconds"] if m["seconds"] else float("nan"),
            "train_seconds": m["seconds"], "checkpoint_seconds": m["checkpoint_s"], "eval_seconds": m["eval_s"],
            "resumed": m["resumed"], "checkpoint": _model_checkpoint(result)}
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

    from recdistill.data.reduce import reduce_blocks

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
    stream = (run.train_ds.map_batches(_window_rows, batch_format="pyarrow", fn_kwargs={"window": STUDENT_WINDOW})
              .map_batches(join_signals, batch_format="pyarrow",
                           fn_kwargs={"store_uri": run.store.uri, "blocks": blocks})
              .materialize())
    cov = reduce_blocks(stream, _coverage, _sum_dicts) or {"rows": 0, "with_signal": 0}
    timings["stream_s"] = time.perf_counter() - t0
    log(f"[stream] window rows joined with teacher signals: {cov['rows']:,} rows, "
        f"{cov['with_signal']:,} with a signal ({cov['rows'] - cov['with_signal']:,} without: the aux loss is "
        f"masked there), {timings['stream_s']:.1f} s")
    return stream, cov


def run_on_ray(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    import ray

    from recdistill.signals.key import raw_student_key
    from recdistill.train.plan import early_fields
    from recdistill.train.ray_workers import students_loop

    run = start_run(cfg, log)
    cfg = run.cfg
    store, key, experiment, storage, base = run.store, run.key, run.experiment, run.storage, run.base
    timings: dict[str, float] = {}
    info, teacher_steps, reused = teacher_stage(cfg, run, log, timings)
    stream, cov = distill_stream(run, log, timings)
    prepared, t_start = run.prepared, run.t_start

    n = len(cfg.students)
    # raw students already trained by an earlier run (another α, another teacher) are reused
    raw_keys = {i: raw_student_key(cfg, i) for i in range(n)}
    cached = {i: store.raw_result(k) for i, k in raw_keys.items()} if cfg.platform.reuse_signals else {}
    first_with: dict[str, int] = {}
    for i, k in raw_keys.items():
        first_with.setdefault(k, i)  # students that differ only in α share one raw student
    skip_raw = sorted(i for i in range(n) if cached.get(i) or first_with[raw_keys[i]] != i)
    size = cfg.platform.students_per_group or n
    groups = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    t0 = time.perf_counter()
    stream_batch = min(s.batch_size for s in cfg.students)
    datasets = {"train": stream, **eval_datasets(run)}
    configs = [{**base, "students": g, "stream_batch": stream_batch, "skip_raw": skip_raw} for g in groups]
    names = [f"students-{j}-{experiment}" for j in range(len(groups))]
    log(f"[students] {n} student(s) × (raw, distilled) in {len(groups)} group(s)"
        + (f"; raw result of student(s) {skip_raw} reused from the store" if skip_raw else ""))
    if len(groups) == 1:
        outs = [_fit_group(students_loop, names[0], cfg, configs[0], datasets, storage)]
    else:
        remote = ray.remote(num_cpus=0)(_fit_group)
        outs = ray.get([remote.remote(students_loop, nm, cfg, c, datasets, storage) for nm, c in zip(names, configs)])
    timings["students_s"] = time.perf_counter() - t0
    members = {k: v for o in outs for k, v in o["members"].items()}
    for i, s in enumerate(cfg.students):
        if cached.get(i):
            members[f"{s.name}/raw"] = cached[i]
        elif i in skip_raw:
            members[f"{s.name}/raw"] = members[f"{cfg.students[first_with[raw_keys[i]]].name}/raw"]
        else:
            store.write_raw_result(raw_keys[i], members[f"{s.name}/raw"])

    results: dict[str, Any] = {
        "engine": "ray",
        "teacher": {**{k: v for k, v in info.items() if k not in ("config", "oracle")},
                    # the cut signal_auc_history/window were measured at (a reused teacher's may differ)
                    "signal_auc_history_fraction": info.get("config", {}).get("history_fraction")},
        "students": [],
        "platform": {"teacher_key": key, "signal_id": run.signal_id, "teacher_reused": reused, "teacher_steps": teacher_steps,
                     "signal_store": store.uri, "stream_rows": cov["rows"], "stream_rows_with_signal":
                     cov["with_signal"], "student_groups": len(groups),
                     "student_resumed": sum(o["resumed"] for o in outs), "raw_reused": len(skip_raw),
                     "student_worker_s": {k: sum(o[k] for o in outs) for k in ("data_s", "feed_s", "checkpoint_s",
                                                                                "eval_s")}, **timings},
    }
    if "oracle" in info:
        results["oracle"] = {"auc": info["oracle"]["auc"]}
    for i, s in enumerate(cfg.students):
        raw, dist = members[f"{s.name}/raw"], members[f"{s.name}/distill"]
        entry = {"name": s.name, "arch": s.arch, "towers": s.towers, "params": dist["params"],
                 "rows": dist["sample_rows"], "rows_from": s.rows, "raw_reused": i in skip_raw,
                 "signal_coverage": dist["signal_rows"] / dist["rows_trained"] if dist["rows_trained"] else 0.0}
        for kind, mm in (("raw", raw), ("distill", dist)):
            entry.update({f"{k}_{kind}": mm[k] for k in ("auc", "logloss", "calibration")})
            entry[f"samples_per_s_{kind}"] = mm["rows_trained"] / mm["seconds"] if mm["seconds"] else float("nan")
            entry[f"train_seconds_{kind}"] = mm["seconds"]
            entry[f"steps_{kind}"] = mm["steps"]
            entry.update(early_fields(mm, f"_{kind}"))
        entry["eta"] = transferability(info["auc"], entry["auc_raw"], entry["auc_distill"])
        results["students"].append(entry)
        log(f"[student {s.name}] AUC raw {entry['auc_raw']:.4f} → distilled {entry['auc_distill']:.4f}, "
            f"η {entry['eta']:.2f}")
    prepared.rejects().check_budget(cfg.data.error_budget, cfg.data.path or "synthetic log")
    results["data"] = prepared.describe()
    results["seconds"] = time.perf_counter() - t_start
    write_results(cfg, results, log)
    ray.kill(run.hub)
    return results
