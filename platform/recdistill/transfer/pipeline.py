"""CrossAdapt's offline stage on Ray: the OLD model's knowledge into a NEW architecture.

1. The teacher (the old model) is trained, or reused from the signal store with its
   forward-distillation logits, exactly as in the 1→N experiment (``engine.teacher``).
2. The offline stream: the students' window joined with those logits, then strategically
   sampled (``transfer.sampling``) and augmented with made-up pairs the teacher scores
   (``transfer.augment``), all Ray Data steps; materialised once in the object store.
3. The variants (``transfer.variants``) of students[0], one after another in one Ray Train
   run: from scratch, or from the teacher's projected embeddings progressively (phase 1
   frozen, phase 2 joint) or end to end. Each logs held-out AUC over its steps.
4. Speed-up: the steps and training seconds a variant needs to reach the scratch
   student's final AUC, as a share of the scratch student's own.
"""

from __future__ import annotations

import math
import operator
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.config import ConfigError, ExperimentConfig, to_dict
from recdistill.data.in_order import materialize_in_order
from recdistill.data.schema import LABEL
from recdistill.data.windows import resolve_shuffle
from recdistill.transfer.augment import AUGMENTED, TeacherScorer, augment_batch, default_item_columns


def _counts(batch: pa.Table, order_column: str) -> dict[str, float]:
    aug = batch.column(AUGMENTED).to_numpy(zero_copy_only=False) == 1 if AUGMENTED in batch.column_names \
        else np.zeros(batch.num_rows, bool)
    y = batch.column(LABEL).to_numpy(zero_copy_only=False)
    order = batch.column(order_column).to_numpy(zero_copy_only=False).astype(np.float64)
    return {"rows": int((~aug).sum()), "positives": int(y[~aug].sum()), "augmented": int(aug.sum()),
            "order_min": float(order.min()) if len(order) else np.inf,
            "order_max": float(order.max()) if len(order) else -np.inf}


def _merge_counts(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {"rows": a["rows"] + b["rows"], "positives": a["positives"] + b["positives"],
            "augmented": a["augmented"] + b["augmented"], "order_min": min(a["order_min"], b["order_min"]),
            "order_max": max(a["order_max"], b["order_max"])}


def _real_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.equal(batch.column(AUGMENTED), 0))


def variant_plan(cfg: ExperimentConfig, variant: str) -> dict[str, Any]:
    """Init and phases (epochs, embeddings frozen) of a variant; every variant trains the
    same number of epochs unless ``transfer.scratch_epochs`` says otherwise."""
    tc = cfg.transfer
    total = tc.phase1_epochs + tc.phase2_epochs
    if variant == "scratch":
        return {"projected": False, "phases": [(tc.scratch_epochs or total, False)]}
    if variant == "end_to_end":
        return {"projected": True, "phases": [(total, False)]}
    return {"projected": True, "phases": [(tc.phase1_epochs, True), (tc.phase2_epochs, False)]}


def time_to_match(curve: list[dict[str, Any]], target: float) -> dict[str, float] | None:
    """The first curve point at or above ``target`` AUC (None: never reached)."""
    for point in curve:
        if point["auc"] >= target:
            return {"step": point["step"], "seconds": point["seconds"], "auc": point["auc"]}
    return None


def speedups(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Steps and training seconds each variant needs to reach the scratch student's final
    curve AUC, as ratios to the scratch student's totals (CrossAdapt: 0.29–0.57 of them)."""
    if "scratch" not in variants:
        return {}
    base = variants["scratch"]
    target = base["curve"][-1]["auc"]
    out: dict[str, Any] = {"target_auc": target, "scratch_steps": base["steps"], "scratch_seconds": base["seconds"]}
    for name, v in variants.items():
        if name == "scratch":
            continue
        hit = time_to_match(v["curve"], target)
        out[name] = {"reached": hit is not None,
                     "steps": hit["step"] if hit else None, "seconds": hit["seconds"] if hit else None,
                     "step_ratio": hit["step"] / base["steps"] if hit else None,
                     "time_ratio": hit["seconds"] / base["seconds"] if hit and base["seconds"] else None}
    return out


def offline_stream(cfg: ExperimentConfig, run: Any, stream: Any, log: Callable[[str], None],
                   timings: dict[str, float], checkpoint: str, teacher_config: dict[str, Any]) -> tuple[Any, dict]:
    """The sampled, augmented and teacher-scored offline rows, materialised; with counts."""
    from recdistill.data.reduce import reduce_blocks
    from recdistill.train.plan import sequence_length
    from recdistill.transfer.strategies import (LogStats, Strategy, describe, strategic_sample, weight_sum,
                                                with_exact_normalisers)

    from recdistill.data.sampling import model_sample
    from recdistill.train.plan import student_rows, student_sample_seed

    tc, schema, student = cfg.transfer, run.schema, cfg.students[0]
    order = schema.order_column
    t0 = time.perf_counter()
    # the student's own sample first (students[0].sampling_ratio, negative_keep_rate), as
    # in the 1→N experiment; the strategy then samples from it
    stream = stream.map_batches(model_sample, batch_format="pyarrow", fn_kwargs={
        "ratio": student_rows(cfg, 0)[0], "negative_keep": student.negative_keep_rate,
        "seed": student_sample_seed(cfg, 0)})
    before = reduce_blocks(stream, _counts, _merge_counts, {"order_column": order})
    if before is None or not before["rows"]:
        raise ValueError("transfer: the offline window is empty; check data.splits and teacher.history_fraction")
    info: dict[str, Any] = {"offline_rows": before["rows"], "offline_positives": before["positives"],
                            "negative_keep_effective": student.negative_keep_rate}
    sp = tc.sampling
    if sp.strategy != "all":
        stats = LogStats(rows=before["rows"], positives=before["positives"], order_min=before["order_min"],
                         order_max=before["order_max"])
        strategy = Strategy(kind=sp.strategy, budget=sp.budget, target_positive_rate=sp.target_positive_rate,
                            recency_strength=sp.recency_strength, recent_fraction=sp.recent_fraction)
        if strategy.uses_time and not schema.has_ts and resolve_shuffle(cfg.data.shuffle, False) != "none":
            # without a time column recency is the row order, and a shuffled log's row ids
            # no longer follow the files' order
            raise ConfigError(f"transfer.sampling.strategy={sp.strategy}: weighs rows by recency, but this log has no "
                              f"time column and data.shuffle={cfg.data.shuffle} reorders its rows; set data.shuffle=none "
                              f"(rows keep file order) or use random or biased sampling")
        # time weights normalised over the log as it is, not as if rows were spread evenly in time
        sums = {kind: reduce_blocks(stream, weight_sum, operator.add, {
                    "strategy": strategy, "stats": stats, "order_column": order, "kind": kind})
                for kind, _ in strategy.components() if kind in ("temporal", "recent")}
        stats = with_exact_normalisers(stats, strategy, **sums)
        stream = stream.map_batches(strategic_sample, batch_format="pyarrow", fn_kwargs={
            "strategy": strategy, "stats": stats, "order_column": order, "seed": cfg.run.seed + 4241})
        rates = describe(strategy, stats)
        info["sampling"] = {"strategy": sp.strategy, **rates}
        # A strategy that changes the label balance is a negative down-sampling as far as the
        # student's logits go: its correction f_S (and calibration) takes λ−/λ+ as well.
        if "negative_keep_rate" in rates:
            rel = float(rates["negative_keep_rate"])
        elif "negative_keep_rate_range" in rates:  # varies with time: its geometric mean
            lo, hi = rates["negative_keep_rate_range"]
            rel = math.sqrt(lo * hi)
        else:
            rel = 1.0
        if student.negative_keep_rate * rel > 1.0:
            raise ConfigError(
                f"transfer.sampling.target_positive_rate={sp.target_positive_rate} is below the offline rows' "
                f"positive rate {stats.positive_rate:.4f}: negatives would be over-sampled, which the sampling "
                f"correction does not model; use a target at or above it")
        info["negative_keep_effective"] = student.negative_keep_rate * rel
    a = tc.augment
    if a.ratio > 0:
        item_columns = a.item_columns or default_item_columns(schema, cfg.data.synthetic)
        stream = (stream.map_batches(augment_batch, batch_format="pyarrow", fn_kwargs={
                      "ratio": a.ratio, "generator": a.generator, "item_columns": item_columns,
                      "user_column": schema.user_field, "seed": cfg.run.seed + 7103})
                  .map_batches(TeacherScorer, batch_format="pyarrow", concurrency=1, fn_constructor_kwargs={
                      "checkpoint": checkpoint, "teacher": teacher_config, "schema": schema,
                      "buckets": run.prepared.preprocessor.buckets, "seq_len": sequence_length(cfg)}))
        info["augment"] = {"ratio": a.ratio, "generator": a.generator, "item_columns": item_columns}
    else:
        stream = stream.map_batches(_flag_real, batch_format="pyarrow")
    stream = materialize_in_order(stream)
    after = reduce_blocks(stream, _counts, _merge_counts, {"order_column": order}) or before
    info.update({"train_rows": after["rows"], "train_positive_rate": after["positives"] / max(1, after["rows"]),
                 "augmented_rows": after["augmented"]})
    timings["offline_stream_s"] = time.perf_counter() - t0
    log(f"[transfer] offline rows {before['rows']:,} → {after['rows']:,} labelled "
        f"(sampling {sp.strategy}, positive rate {info['train_positive_rate']:.3f}) + {after['augmented']:,} "
        f"augmented rows scored by the teacher, {timings['offline_stream_s']:.1f} s")
    return stream, info


def _flag_real(batch: pa.Table) -> pa.Table:
    return batch.append_column(AUGMENTED, pa.array(np.zeros(batch.num_rows, np.int8)))


def _write_models(cfg: ExperimentConfig, run: Any, info: dict[str, Any] | None, result: Any,
                  variants: dict[str, dict[str, Any]], data_info: dict[str, Any],
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Every variant of the new model (``models/<student>/<variant>/``) and the old model
    (the teacher trained here; none when it came as an artifact, ``info`` None) as
    artifacts; a variant's sampling record holds the offline rows' effective negative keep
    rate (the strategic sampling's rebalancing included)."""
    import dataclasses

    from recdistill.artifacts.run_models import RunModels
    from recdistill.engine.trainer import final_checkpoint, final_weights
    from recdistill.train.plan import feature_spec, sequence_length

    pre = run.prepared.preprocessor
    s = dataclasses.replace(cfg.students[0], negative_keep_rate=data_info["negative_keep_effective"])
    models = RunModels(dataclasses.replace(cfg, students=[s, *cfg.students[1:]]), pre,
                       feature_spec(run.schema, pre.buckets), sequence_length(cfg), run.key, log)
    if info is not None:
        models.stored_teacher(run.store, info["generation"], info.get("final") or info)
    ckpt = final_checkpoint(result)
    for name, v in variants.items():
        models.student(0, name, final_weights(ckpt, name), v["final"])
    return models.summary()


def _old_model_stage(cfg: ExperimentConfig, run: Any, old: Any, log: Callable[[str], None],
                     timings: dict[str, float]) -> tuple[dict[str, Any], Any, dict[str, int], Any]:
    """With ``transfer.old_model``: the students' window (its rows carry the old model's
    logit, ``transfer.old_model.with_old_logits``), the projection through the encoders' id
    pairing (put in the object store for the workers) and the old model's record."""
    import ray

    from recdistill.engine.stream import materialised_with_coverage, students_window
    from recdistill.train.plan import feature_spec
    from recdistill.transfer.old_model import check_fields, old_projection, old_test_auc

    check_fields(old, run.schema)
    t0 = time.perf_counter()
    stream, cov = materialised_with_coverage(students_window(run))  # its rows carry the old model's logit
    timings["stream_s"] = time.perf_counter() - t0
    pre = run.prepared.preprocessor
    t0 = time.perf_counter()
    projected, pairing = old_projection(cfg, old, run.prepared.raw["train"], pre, feature_spec(run.schema, pre.buckets))
    auc = old_test_auc(old, run.prepared.raw["test"])
    timings["old_model_s"] = time.perf_counter() - t0
    unseen = {f: r["old_oov_rows"] for f, r in pairing.items() if r["old_oov_rows"]}
    log(f"[transfer] old model AUC {auc:.4f} on this run's test rows (its own encoding); window rows "
        f"{cov['rows']:,} scored by it; ids it never saw: "
        + (", ".join(f"{f} {n:,} rows" for f, n in unseen.items()) if unseen else "none"))
    a = old.artifact
    info = {"arch": a.config["arch"], "auc": auc, "params": a.model.num_params(),
            "config": {"embed_dim": a.config["embed_dim"]},
            "old_model": {**old.describe(), "test_auc": auc, "id_pairing": pairing}}
    return info, stream, cov, ray.put(projected)


def run_transfer(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    from recdistill.engine.ray_run import start_run
    from recdistill.engine.stream import distill_stream
    from recdistill.engine.teacher import teacher_stage
    from recdistill.engine.trainer import ray_trainer
    from recdistill.transfer.augment import teacher_state_path
    from recdistill.report.transfer import write_transfer_results
    from recdistill.transfer.workers import transfer_loop

    old = None
    if cfg.transfer.old_model:
        from recdistill.ray_env import ensure_ray
        from recdistill.transfer.old_model import open_old_model, with_old_logits

        ensure_ray()
        old = open_old_model(cfg, log)
    run = start_run(cfg, log, with_old_logits(old) if old is not None else None)
    cfg = run.cfg
    timings: dict[str, float] = {}
    projected = None
    if old is not None:
        info, stream, cov, projected = _old_model_stage(cfg, run, old, log, timings)
        teacher_steps, reused, checkpoint = 0, False, None
    else:
        info, teacher_steps, reused = teacher_stage(cfg, run, log, timings)
        checkpoint = info.get("checkpoint")
        if not checkpoint:
            raise RuntimeError(f"teacher {run.key} has no model checkpoint in the store; set "
                               f"platform.reuse_signals=false to retrain it")
        teacher_state_path(checkpoint)  # fail here, not in every worker, when it is gone
        stream, cov = distill_stream(run, log, timings)
    train, data_info = offline_stream(cfg, run, stream, log, timings, checkpoint, info["config"])
    curve_ds = materialize_in_order(run.test_ds.limit(cfg.transfer.eval_rows))
    s = cfg.students[0]
    log(f"[transfer] teacher {info['arch']} (embed {info['config']['embed_dim']}) → student {s.arch} "
        f"(embed {s.embed_dim}); variants {', '.join(cfg.transfer.variants)}")
    # the same labelled rows without the augmented ones, materialised too: every variant's
    # training time is then its own, not a filter's
    real_only = (materialize_in_order(train.map_batches(_real_rows, batch_format="pyarrow"))
                 if "progressive_noaug" in cfg.transfer.variants else None)
    plans = [{"variant": name, "dataset": "train_real" if name == "progressive_noaug" else "train",
              **variant_plan(cfg, name)} for name in cfg.transfer.variants]
    loop_config = {**run.base, "variants": plans, "checkpoint": checkpoint, "teacher_config": info["config"],
                   "negative_keep": data_info["negative_keep_effective"], "projected": projected}
    datasets = {"train": train, "test": run.test_ds, "curve": curve_ds}
    if real_only is not None:
        datasets["train_real"] = real_only
    t0 = time.perf_counter()
    result = ray_trainer(transfer_loop, f"transfer-{run.experiment}", cfg, loop_config, datasets, 1,
                         run.storage, run.callbacks("transfer")).fit()
    variants: dict[str, dict[str, Any]] = result.metrics["variants"]
    timings["variants_s"] = time.perf_counter() - t0
    for name, m in variants.items():
        log(f"[transfer {name}] AUC {m['final']['auc']:.4f} after {m['steps']} steps, {m['seconds']:.1f} s training")
    log(f"[transfer] {len(variants)} variant(s) in one Ray Train run: {timings['variants_s']:.1f} s with Ray's "
        f"fixed costs")
    results: dict[str, Any] = {
        "engine": "ray", "kind": "transfer",
        "teacher": {k: v for k, v in info.items() if k not in ("config", "oracle")},
        "teacher_embed_dim": info["config"]["embed_dim"], "student": to_dict(s),
        "data": data_info, "variants": variants, "speedup": speedups(variants),
        "platform": {"teacher_key": run.key if old is None else None, "teacher_reused": reused,
                     "teacher_steps": teacher_steps, "stream_rows": cov["rows"],
                     "failures": run.settle(), **timings},  # why a Train run resumed, where one did
    }
    if old is not None:
        results["old_model"] = info["old_model"]
    if "oracle" in info:
        results["oracle"] = {"auc": info["oracle"]["auc"]}
    results["models"] = _write_models(cfg, run, info if old is None else None, result, variants, data_info, log)
    run.prepared.rejects().check_budget(cfg.data.error_budget, cfg.data.path or "synthetic log")
    results["seconds"] = time.perf_counter() - run.t_start
    results["tracking"] = run.opened.tracking_info()
    run.finish(results, write_transfer_results(cfg, results, log))
    return results
