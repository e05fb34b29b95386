"""A student group's Ray Train loop: one pass per epoch over the distill stream (the
students' window joined with the teacher's logits) trains every student of the group,
raw and distilled (``train.group``); then each is scored on the test split. It
checkpoints each epoch and resumes after a worker failure (``train.worker``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from recdistill.data.tensors import from_table
from recdistill.signals.kinds import LOGIT
from recdistill.train.group import StudentGroup
from recdistill.train.plan import student_members
from recdistill.train.worker import (COLD_SUFFIX, LIVE, PLACEMENT_GROUP, TRAINS_ON, finish, save_checkpoint, score_test,
                                    shard_validator, test_hook_crash, worker_prologue)


def students_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.util

    ctx = worker_prologue(config)
    schema, seq_len, rank, device = ctx.schema, ctx.seq_len, ctx.rank, ctx.device
    group = StudentGroup(student_members(ctx.cfg, ctx.spec, config["students"], config.get("skip_raw", ())), device,
                         shard_validator(config, schema, seq_len, device))
    # ``batches`` counts stream batches over the whole run (restored on resume), so the
    # failure hook's step names one point of the run however often it restarted
    start, resumed, batches = 0, 0, 0
    saved = ctx.saved
    if saved:
        group.load(saved["group"])
        start, resumed, batches = saved["epoch"], saved["resumed"] + 1, saved["batches"]
    shard = ray.train.get_dataset_shard("train")
    timing = {"data_s": 0.0, "feed_s": 0.0, "checkpoint_s": 0.0}
    last: dict[str, Any] = {"epoch": start}
    # the worker group's placement group: a sweep removes it when its scheduler stopped this
    # run (Train's own cleaner needs the State API, which a cluster without a dashboard lacks)
    pg = ray.util.get_current_placement_group()
    placement = {PLACEMENT_GROUP: pg.id.hex()} if pg is not None else {}
    tune_metric: dict[str, float] = {}
    for epoch in range(start, group.epochs):
        if not group.active:  # every member stopped early
            break
        t_data = time.perf_counter()
        for table in shard.iter_batches(batch_size=config["stream_batch"], batch_format="pyarrow"):
            b = from_table(table, schema, seq_len)
            zt = torch.from_numpy(table.column(LOGIT).to_numpy(zero_copy_only=False).astype(np.float32))
            t_feed = time.perf_counter()
            timing["data_s"] += t_feed - t_data
            group.feed(b, zt, epoch)
            t_data = time.perf_counter()
            timing["feed_s"] += t_data - t_feed
            batches += 1
            test_hook_crash("students", batches)
        group.end_epoch(epoch)
        if rank == 0:
            print(f"[students] epoch {epoch + 1}/{group.epochs}: " + ", ".join(
                f"{m.name} {m.rows:,} rows {m.rows / max(m.seconds, 1e-9):,.0f}/s" for m in group.members), flush=True)
        # every epoch is reported (live to the run's trackers, and to Tune inside a sweep trial,
        # whose scheduler ranks on valid_auc_distill by epoch)
        live = group.live(epoch + 1)
        tune_metric.update(_tune_metric(live))  # an epoch without validation keeps the last value
        more = epoch + 1 < group.epochs and group.active
        report = {"epoch": epoch + 1, LIVE: {"epoch": epoch + 1, **live}, TRAINS_ON: more, **tune_metric,
                  **placement}
        if more:  # finished models go straight to scoring
            t_ck = time.perf_counter()
            save_checkpoint({"group": group.state(), "epoch": epoch + 1, "resumed": resumed, "batches": batches},
                            report, rank)
            timing["checkpoint_s"] += time.perf_counter() - t_ck
        else:
            ray.train.report(report)
            last = report

    t_eval = time.perf_counter()
    models = {m.name: m.model for m in group.members}
    keep = {m.name: m.negative_keep for m in group.members}
    teacher = _cold_teacher(ctx, config)
    if teacher is not None:  # scored on the cold users' rows beside the students (η's teacher there)
        models[TEACHER] = teacher
        keep[TEACHER] = ctx.cfg.teacher.negative_keep_rate
    ev = score_test(ctx, config, models, keep)
    members = {m.name: {**ev.metrics(m.name), "params": m.model.num_params(), **m.summary(),
                        **_cold_metrics(ev, m.name)} for m in group.members}
    timing["eval_s"] = time.perf_counter() - t_eval
    extra = {TEACHER: _cold_metrics(ev, TEACHER)} if teacher is not None else {}
    finish({"members": members, "threads": ctx.threads, "resumed": resumed, "batches": batches, "device": device.type,
            **extra, **timing, **{k: v for k, v in last.items() if k not in (LIVE, TRAINS_ON)}}, rank,
           {m.name: m.model for m in group.members})


TEACHER = "teacher"
COLD_TEACHER = "cold_teacher_weights"  # loop-config: the teacher's weights in the store, to score it on cold users


def _cold_metrics(ev: Any, name: str) -> dict[str, Any]:
    """A model's figures on the cold users' test rows (``engine.cold``), when scored there."""
    cold = f"{name}{COLD_SUFFIX}"
    return {"cold": ev.metrics(cold)} if cold in ev.names and ev.acc[cold].n else {}


def _cold_teacher(ctx: Any, config: dict[str, Any]) -> torch.nn.Module | None:
    """The teacher from its stored weights, when this run scores the cold users' rows."""
    path = config.get(COLD_TEACHER)
    if not path:
        return None
    import tempfile
    from pathlib import Path

    from safetensors.torch import load_file

    from recdistill.signals.store import SignalStore
    from recdistill.train.plan import build_model

    model = build_model(ctx.spec, ctx.cfg.teacher, "single", 0, sparse_embeddings=False)
    with tempfile.TemporaryDirectory() as d:
        local = Path(d) / "teacher.safetensors"
        if not SignalStore(config["store"]).get_file(path, local):
            raise RuntimeError(f"run.cold_users: the teacher's weights are not in the signal store ({path})")
        model.load_state_dict(load_file(str(local)))
    return model.to(ctx.device)


def _tune_metric(live: dict[str, Any]) -> dict[str, float]:
    """The mean validation AUC of the distilled students that validated this epoch (what a
    sweep's scheduler ranks a trial on); nothing when none did."""
    aucs = [k["distill"]["valid_auc"] for k in live.values() if "valid_auc" in k.get("distill", {})]
    return {"valid_auc_distill": float(np.mean(aucs))} if aucs else {}
