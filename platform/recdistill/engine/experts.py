"""A committee's domain experts on Ray (DiverseDistill): trained once per key, then frozen.

The experts have the first student's shape. Each trains on its slice of the teacher-only
history (``data.expert_slices``), so every row of the students' window is new to all of
them: their logits and states on those rows are as causal as the teacher's forward
signals. The K experts train together in one one-worker Train run, one pass per epoch
over the history (``train.students_loop`` with its expert members), each validated and
stopped on its own and scored on the test split. Their weights go to the signal store
under the experts' key (``train.keys.experts_key``) with an info record written last; a
later run of the same key (another teacher, another α, another seed's teacher) reuses them.
"""

from __future__ import annotations

import shutil
import time
from typing import Any, Callable

from recdistill.config import ExperimentConfig, slice_spec
from recdistill.data.expert_slices import history_rows, slice_rule, tag_slices
from recdistill.engine.ray_run import RayRun, eval_datasets
from recdistill.engine.trainer import CHECKPOINT, final_weights, fit_metrics
from recdistill.signals.lease import reuse_or_lease
from recdistill.signals.store import EXPERTS_DIR
from recdistill.train.committee import expert_config, expert_name
from recdistill.train.keys import experts_key
from recdistill.train.students_loop import EXPERT_WEIGHTS, SLICE_TEACHER, TEACHER, TRAIN_EXPERTS, students_loop


def experts_stage(cfg: ExperimentConfig, run: RayRun, teacher_info: dict[str, Any], log: Callable[[str], None],
                  timings: dict[str, float]) -> dict[str, Any] | None:
    """The committee's experts (trained here or found in the store) as the run's record of
    them, with the loop-config entry the students need under ``EXPERT_WEIGHTS``; None
    without a committee."""
    c = cfg.committee
    if not c.experts:
        return None
    key, store, p = experts_key(cfg), run.store, cfg.platform
    paths = [store.expert_weights_path(key, k) for k in range(c.experts)]
    # two runs of one experts key at once (a sweep's trials over teachers or α): one trains
    # them under a lease in the store, the other waits and reuses them
    info, lease = reuse_or_lease(store, f"{EXPERTS_DIR}/{key}", run.experiment, p.lease_ttl_s, p.lease_poll_s,
                                 lambda: store.experts_info(key) if p.reuse_signals else None, log, p.lease_wait_s,
                                 what="experts")
    if lease is None:
        log(f"[experts] reusing {c.experts} stored expert(s) of key {key} (AUC "
            + ", ".join(f"{e['auc']:.4f}" for e in info["experts"]) + ")")
        return {**info, "reused": True, EXPERT_WEIGHTS: paths}
    with lease:
        info = _train_experts(cfg, run, teacher_info, key, paths, log, timings)
    return {**info, "reused": False, EXPERT_WEIGHTS: paths}


def _train_experts(cfg: ExperimentConfig, run: RayRun, teacher_info: dict[str, Any], key: str, paths: list[str],
                   log: Callable[[str], None], timings: dict[str, float]) -> dict[str, Any]:
    """Train the experts of ``key`` in one Train run and commit them to the store (under the lease)."""
    c, store = cfg.committee, run.store
    t0 = time.perf_counter()
    kind, field = slice_spec(c.slice_by)
    history = run.train_ds.map_batches(history_rows, batch_format="pyarrow")
    rule = slice_rule(history, kind, field, c.experts, run.schema.order_column, run.schema.categorical)
    if kind == "field" and rule["packed_values"] < c.experts and min(rule["packed_rows"]) == 0:
        raise ValueError(f"committee.slice_by={c.slice_by}: the field has {rule['packed_values']} value(s) in the "
                         f"history, fewer than committee.experts={c.experts}, so some expert would have no rows; "
                         f"use at most {rule['packed_values']} experts or slice by another field")
    shape = expert_config(cfg)
    log(f"[experts] training {c.experts} {shape.arch} expert(s) (the first student's shape) on the history sliced by "
        f"{c.slice_by}" + (f" ({rule['packed_values']} commonest values packed into {c.experts} groups of "
                           f"{', '.join(f'{r:,}' for r in rule['packed_rows'])} rows, the rest by hash)"
                           if kind == "field" else "") + f" (key {key})")
    name = f"experts-{key}-{run.experiment}"
    # each expert is also scored on its own slice's test rows, beside the teacher there (its
    # stored weights: the final ones), so the report says whether it knows its slice better
    teacher = run.store.teacher_weights_path(run.key, teacher_info["generation"])
    loop = {**run.base, TRAIN_EXPERTS: True, "stream_batch": shape.batch_size,
            **({SLICE_TEACHER: teacher} if run.store.exists(teacher) else {})}
    held_out = eval_datasets(run)
    held_out["test"] = held_out["test"].map_batches(tag_slices, batch_format="pyarrow", fn_kwargs={"rule": rule})
    datasets = {"train": history.map_batches(tag_slices, batch_format="pyarrow", fn_kwargs={"rule": rule}),
                **held_out}
    out = fit_metrics(students_loop, name, cfg, loop, datasets, run.storage, run.callbacks("experts"))
    experts = []
    for k in range(c.experts):
        model = f"{expert_name(k)}/raw"
        m = out["members"][model]
        if not m["sample_rows"]:
            raise ValueError(f"committee expert {k}: its slice of the history ({c.slice_by}) has no rows; use fewer "
                             f"experts (committee.experts={c.experts}) or another committee.slice_by")
        weights = final_weights(out[CHECKPOINT], model)
        if weights is None:
            raise RuntimeError(f"committee expert {k}: its Train run {name} left no weights in its final checkpoint")
        store.put_file(weights, paths[k])
        own = (m.get("slices") or {}).get(str(k))
        t_own = ((out.get(TEACHER) or {}).get("slices") or {}).get(str(k))
        experts.append({"name": expert_name(k), "rows": m["sample_rows"], "steps": m["steps"], "auc": m["auc"],
                        "logloss": m["logloss"], "params": m["params"], "train_seconds": m["seconds"],
                        "stopped_epoch": m["stopped_epoch"],
                        **({"slice_test_rows": own["rows"], "auc_own_slice": own["auc"]} if own else {}),
                        **({"teacher_auc_own_slice": t_own["auc"]} if t_own else {})})
    shutil.rmtree(run.storage / name, ignore_errors=True)  # the weights are in the store now
    seconds = time.perf_counter() - t0
    info = {"key": key, "slice_by": c.slice_by, "arch": shape.arch, "experts": experts, "seconds": seconds,
            "slices": {k: v for k, v in rule.items() if k not in ("codes", "groups")}}
    store.write_experts_info(key, info)
    timings["experts_s"] = seconds
    log("[experts] AUC " + ", ".join(f"{e['name']} {e['auc']:.4f} ({e['rows']:,} rows"
                                     + (f"; on its slice {e['auc_own_slice']:.4f}, the teacher there "
                                        f"{e['teacher_auc_own_slice']:.4f}" if "teacher_auc_own_slice" in e else "")
                                     + ")" for e in experts)
        + f"; {seconds:.1f} s with Ray's fixed costs")
    return info
