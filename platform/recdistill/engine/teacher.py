"""The teacher of a batch run on Ray: reused from the signal store when its signals are
complete there, else trained by Ray Train (``train.teacher_loop``) into a fresh
generation of its key, under a lease so two runs never train one key at once. How its
signals are made is ``teacher.signals``: recorded in its first pass (forward), scored by the
trained teacher (posthoc), or scored fold by fold by K teachers that never saw the fold
(crossfit, K Train runs).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from recdistill.config import ExperimentConfig, signal_mode, to_dict
from recdistill.data.folds import fold_score_rows, fold_train_rows
from recdistill.data.windows import HISTORY, STUDENT_WINDOW
from recdistill.engine.ray_run import RayRun, eval_datasets
from recdistill.engine.trainer import (CHECKPOINT, final_checkpoint, final_weights, model_checkpoint, ray_trainer,
                                       use_gpu, worker_gpus)
from recdistill.ray_env import alive_nodes
from recdistill.signals.hub import completed
from recdistill.signals.kinds import LOGIT_KIND
from recdistill.signals.representations import KIND as REPRESENTATION
from recdistill.signals.semantic_ids import CODE_KIND, quantise_store
from recdistill.signals.lease import reuse_or_lease
from recdistill.signals.publish import Publisher
from recdistill.signals.store import new_generation, signal_id
from recdistill.train.plan import teacher_sample_seed


def teacher_stage(cfg: ExperimentConfig, run: RayRun, log: Callable[[str], None], timings: dict[str, float],
                  on_train: Callable[[], None] | None = None) -> tuple[dict[str, Any], int, bool]:
    """The teacher's stored info, steps run here and whether it was reused: its signals are
    looked up in the store and it is trained only when they are missing. A run that finds
    another run training the same key waits for that run's signals instead of training
    it a second time (a lease in the store). ``on_train`` is called just before a forward
    teacher's Train run starts (``run.signal_id`` set): students that follow it start there."""
    key, store, hub = run.key, run.store, run.hub
    windows = [(0, HISTORY), (0, STUDENT_WINDOW)]
    done: list[dict[str, Any]] = []
    supplies = supplied_kinds(cfg)

    def stored() -> dict[str, Any] | None:
        info = store.teacher_info(key, supplies) if cfg.platform.reuse_signals else None
        if info is None:
            return None
        if any(store.completion(signal_id(key, info["generation"]), 0, 0, k) is None for k in supplies[1:]):
            return None
        got = completed(hub, signal_id(key, info["generation"]), windows)
        done[:] = got or []
        return info if got else None

    p = cfg.platform
    info, lease = reuse_or_lease(store, key, run.experiment, p.lease_ttl_s, p.lease_poll_s, stored, log,
                                 p.lease_wait_s)
    if lease is not None:
        with lease:
            info, steps = _train_teacher(cfg, run, log, timings, on_train)
        return info, steps, False
    run.signal_id = signal_id(key, info["generation"])
    cut = info.get("config", {}).get("history_fraction")
    log(f"[teacher] reusing stored signals of teacher {key} ({sum(d['rows'] for d in done):,} rows, "
        f"{sum(d['blocks'] for d in done)} blocks): 0 teacher steps"
        + (f"; it was recorded with teacher.history_fraction={cut:g}, which does not change it here (its "
           f"signal_auc_history/window are for that cut)" if cut is not None and cut != cfg.teacher.history_fraction
           else ""))
    return info, 0, True


def _train_teacher(cfg: ExperimentConfig, run: RayRun, log: Callable[[str], None], timings: dict[str, float],
                   on_train: Callable[[], None] | None = None) -> tuple[dict[str, Any], int]:
    """Train the teacher into a fresh generation of its key and commit it (under the lease):
    one Train run (forward, posthoc) or one per fold (crossfit)."""
    from recdistill.data.sampling import model_sample

    t, key, store, hub = cfg.teacher, run.key, run.store, run.hub
    mode, folds = signal_mode(t.signals)
    generation = new_generation()
    run.signal_id = signal_id(key, generation)
    t0 = time.perf_counter()
    teacher_ds = run.train_ds.map_batches(model_sample, batch_format="pyarrow", fn_kwargs={
        "ratio": t.sampling_ratio, "negative_keep": t.negative_keep_rate, "seed": teacher_sample_seed(cfg)})
    log(f"[teacher] training {t.arch} (key {key}, generation {generation}, signals {mode}"
        + (f", {folds} fold teachers" if mode == "crossfit" else "") + f") on {cfg.platform.teacher_workers} "
        f"Ray Train worker(s)")
    def fit_args(name: str, train_ds: Any, score_ds: Any | None, publish_rank: int = 0) -> tuple[Any, ...]:
        extra = {"score_signals": True, "publish_rank": publish_rank} if score_ds is not None else {}
        datasets = {"train": train_ds, **({"score": score_ds} if score_ds is not None else {}), **eval_datasets(run)}
        return (cfg, name, {**run.base, "key": run.signal_id, **extra}, datasets, run.storage,
                run.callbacks("teacher"))

    if mode == "crossfit":
        import ray

        at_once = _cluster_fold_concurrency(cfg)
        log(f"[teacher] crossfit: {folds} fold teachers, {at_once} at a time")
        runs: list[dict[str, Any]] = []
        fit = ray.remote(num_cpus=0)(_fit)
        for start in range(0, folds, at_once):  # in waves: never more workers than the cluster places
            runs += ray.get([fit.remote(*fit_args(
                f"teacher-{key}-f{k}-{run.experiment}",
                teacher_ds.map_batches(fold_train_rows, batch_format="pyarrow", fn_kwargs={"fold": k, "folds": folds}),
                run.train_ds.map_batches(fold_score_rows, batch_format="pyarrow", fn_kwargs={"fold": k, "folds": folds}),
                k * cfg.platform.teacher_workers)) for k in range(start, min(folds, start + at_once))])
    else:
        if mode == "forward" and on_train is not None:
            on_train()
        runs = [_fit(*fit_args(f"teacher-{key}-{run.experiment}", teacher_ds,
                               run.train_ds if mode == "posthoc" else None))]
    for w in (0, STUDENT_WINDOW):
        Publisher(store, hub, run.signal_id).complete(0, w)
    if t.representations:
        blocks, _ = store.scan(run.signal_id, REPRESENTATION)
        store.mark_complete(run.signal_id, 0, 0, sum(b.rows for b in blocks), len(blocks), kind=REPRESENTATION)
        log(f"[teacher] representations: {len(blocks)} embedding blocks, {sum(b.rows for b in blocks):,} "
            f"(entity, time) values")
    semantic = None
    if t.semantic_ids.levels:
        sid = t.semantic_ids
        semantic = quantise_store(store.uri, run.signal_id, [b.to_dict() for b in blocks],
                                  int(runs[0]["metrics"]["history_to"]), sid.levels, sid.codes, sid.fit_rows,
                                  cfg.run.seed)
        store.mark_complete(run.signal_id, 0, 0, sum(b.rows for b in blocks), semantic["blocks"], kind=CODE_KIND)
        q = semantic["quality"]
        log(f"[teacher] semantic IDs: {sid.levels} levels × {sid.codes} codes fitted on {semantic['fitted_on']:,} "
            f"values stamped by the end of its history; relative reconstruction error by level "
            + ", ".join(f"{x['relative_error']:.3f}" for x in q) + "; codes used "
            + ", ".join(f"{x['codes_used']:.0%}" for x in q))
    info = {**_teacher_info([r["metrics"] for r in runs]), "key": key, "generation": generation, "arch": t.arch,
            "config": to_dict(t), "signals": mode, "checkpoint": runs[0]["model_checkpoint"],
            **({"semantic_ids": semantic} if semantic else {})}
    if mode == "crossfit":
        info["folds"] = [_fold_summary(r["metrics"]) for r in runs]
    # beside its signals: a run reusing them still writes the teacher's artifact (crossfit:
    # fold 0's teacher, which trained on the history and all but a 1/K of the window)
    weights = final_weights(runs[0][CHECKPOINT], "teacher")
    if weights is not None:
        store.put_file(weights, store.teacher_weights_path(key, generation))
    store.commit_teacher(key, info, supplied_kinds(cfg))
    timings["teacher_s"] = time.perf_counter() - t0
    firsts = [r["metrics"].get("first_step_at") for r in runs]
    if run.opened is not None and all(firsts):
        # from the run's start to the teacher's first optimizer step: start-up, preparation, Train's start
        timings["first_teacher_step_s"] = min(firsts) - run.opened.started
        log(f"[teacher] its first step came {timings['first_teacher_step_s']:.1f} s after the run started")
    log(f"[teacher] AUC {info['auc']:.4f} after {info['steps']} steps ({info['samples_per_s']:,.0f} samples/s, "
        f"{timings['teacher_s']:.1f} s with Ray's fixed costs); stopped in epoch {info['stopped_epoch']}/{t.epochs}"
        + (f"; trained on after its recording pass: AUC {info['final']['auc']:.4f} (η uses the recorded one)"
           if "final" in info else "")
        + (f"; mean of {folds} fold teachers (" + ", ".join(f"{f['auc']:.4f}" for f in info["folds"]) + ")"
           if mode == "crossfit" else ""))
    return info, info["steps"]


def supplied_kinds(cfg: ExperimentConfig) -> tuple[str, ...]:
    """The signal kinds a run's teacher supplies: logits, with ``teacher.representations`` its
    user and item embeddings, and with ``teacher.semantic_ids`` their codes."""
    t = cfg.teacher
    return (LOGIT_KIND.name, *((REPRESENTATION,) if t.representations else ()),
            *((CODE_KIND,) if t.semantic_ids.levels else ()))


def representation_blocks(run: RayRun, kind: str = REPRESENTATION) -> list[dict[str, Any]]:
    """The teacher's representation (or code) blocks (``signals.representations``), once complete."""
    if run.store.completion(run.signal_id, 0, 0, kind) is None:
        raise RuntimeError(f"teacher {run.signal_id}: its {kind} signals are not complete in the store "
                           f"{run.store.uri}; train the teacher again (platform.reuse_signals=false)")
    blocks, _ = run.store.scan(run.signal_id, kind)
    return [b.to_dict() for b in blocks]


def _fit(cfg: ExperimentConfig, name: str, loop_config: dict[str, Any], datasets: dict[str, Any], storage: Any,
         callbacks: list[Any]) -> dict[str, Any]:
    """One teacher Train run: its final metrics and checkpoints. With a "score" dataset
    (``score_signals``) it records nothing and, once trained, scores those rows into the
    signal store."""
    from recdistill.train.teacher_loop import teacher_loop

    result = ray_trainer(teacher_loop, name, cfg, loop_config, datasets, cfg.platform.teacher_workers, storage,
                         callbacks).fit()
    return {"metrics": result.metrics, CHECKPOINT: final_checkpoint(result), "model_checkpoint": model_checkpoint(result)}


def fold_concurrency(cfg: ExperimentConfig, cpus: float, gpus: float, nodes: int) -> int:
    """How many fold teachers train at once on a cluster of ``cpus`` CPUs and ``gpus`` GPUs
    (``gpus`` 0: CPU workers) over ``nodes`` nodes. On GPUs, as many as get their GPU share.
    On CPUs, one per node: a CPU worker runs torch on every core of its node
    (``train.worker.set_threads``), so a second fold teacher there only shares those cores
    (measured on 2 cores: 5 folds 4 at a time took 414 s, while one forward teacher took
    38 s); and never so many that Ray Data loses its CPU (a Train run that takes the last
    CPU starves its reader and hangs)."""
    folds, per_run = signal_mode(cfg.teacher.signals)[1], cfg.platform.teacher_workers
    if gpus:
        fits = int(gpus // (per_run * worker_gpus(cfg, cluster_gpus=gpus, workers=per_run)))
    else:
        fits = min(nodes, int((cpus - 1) // (per_run * cfg.platform.cpus_per_worker)))
    return max(1, min(folds, fits))


def _cluster_fold_concurrency(cfg: ExperimentConfig) -> int:
    import ray

    res = ray.cluster_resources()
    return fold_concurrency(cfg, res.get("CPU", 1), res.get("GPU", 0) if use_gpu(cfg) else 0, max(1, alive_nodes()))


def _teacher_info(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored teacher record from its Train run's metrics; for crossfit's fold teachers
    the mean of each figure (steps, rows and seconds summed: what the K teachers cost)."""
    infos = []
    for m in metrics:
        scored = dict(m["teacher"])  # its test metrics; their row count is the test split's, not its training rows
        info = {**scored, "steps": m["steps"], "rows": m["rows"], "test_rows": scored.pop("rows", None),
                "train_seconds": m["seconds"], "checkpoint_seconds": m["checkpoint_s"], "eval_seconds": m["eval_s"],
                "resumed": m["resumed"]}
        if "oracle" in m:
            info["oracle"] = m["oracle"]
        infos.append(info)
    out = dict(infos[0])
    if len(infos) > 1:
        summed = ("steps", "rows", "train_seconds", "checkpoint_seconds", "eval_seconds", "resumed")
        for k, v in out.items():
            if k in summed:
                out[k] = sum(i[k] for i in infos)
            elif isinstance(v, float):  # counts (epochs, params) stay fold 0's: the same or near it
                out[k] = float(np.mean([i[k] for i in infos]))
        out["signal_rows"] = {w: sum(i["signal_rows"][w] for i in infos) for w in infos[0]["signal_rows"]}
        for k in ("auc_boot", "valid_curve", "final"):  # per model: not averaged over different teachers
            out.pop(k, None)
    out["samples_per_s"] = out["rows"] / out["train_seconds"] if out["train_seconds"] else float("nan")
    return out


def _fold_summary(m: dict[str, Any]) -> dict[str, Any]:
    t = m["teacher"]
    return {"auc": t["auc"], "logloss": t["logloss"], "signal_auc_window": t["signal_auc_window"],
            "signal_rows": t["signal_rows"]["window"], "steps": m["steps"], "rows": m["rows"]}
