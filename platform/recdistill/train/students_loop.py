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
from recdistill.train.follow import FOLLOW, SignalFollower
from recdistill.signals.kinds import LOGIT
from recdistill.train.committee import Committee, expert_members
from recdistill.train.evaluate import Validator
from recdistill.train.group import StudentGroup
from recdistill.train.plan import PACKED_SEEDS, packed_members, seed_channel, student_members
from recdistill.train.step_timer import synced_clock
from recdistill.train.worker import (COLD_SUFFIX, LIVE, PLACEMENT_GROUP, TRAINS_ON, finish, save_checkpoint, score_test,
                                    shard_validator, slice_name, test_hook_crash, worker_prologue)


def students_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.util

    ctx = worker_prologue(config)
    schema, seq_len, rank, device = ctx.schema, ctx.seq_len, ctx.rank, ctx.device
    experts = load_experts(ctx, config["store"], config.get(EXPERT_WEIGHTS, []))
    seeds = config.get(PACKED_SEEDS)  # each seed's students, with its own teacher's logits
    if config.get(TRAIN_EXPERTS):
        members = expert_members(ctx.cfg, ctx.spec)
    elif seeds:
        members = packed_members(ctx.cfg, ctx.spec, config["students"], seeds, experts)
    else:
        members = student_members(ctx.cfg, ctx.spec, config["students"], config.get("skip_raw", ()), experts)
    channels = [seed_channel(int(e["seed"])) for e in seeds] if seeds else [LOGIT]
    timing = {"data_s": 0.0, "feed_s": 0.0, "checkpoint_s": 0.0, "valid_s": 0.0}
    group = StudentGroup(members, device, _timed(shard_validator(config, schema, seq_len, device), timing, device),
                         Committee(experts, device) if experts else None)
    # ``batches`` counts stream batches over the whole run (restored on resume), so the
    # failure hook's step names one point of the run however often it restarted
    start, resumed, batches = 0, 0, 0
    saved = ctx.saved
    if saved:
        group.load(saved["group"])
        start, resumed, batches = saved["epoch"], saved["resumed"] + 1, saved["batches"]
    shard = ray.train.get_dataset_shard("train")
    # following a teacher still training: the shard is the window unjoined, joined here
    follower = SignalFollower.from_config(config[FOLLOW]) if config.get(FOLLOW) else None
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
        tables = (follower.batches(shard, config["stream_batch"], keep=epoch + 1 < group.epochs)
                  if follower is not None else
                  shard.iter_batches(batch_size=config["stream_batch"], batch_format="pyarrow"))
        for table in tables:
            b = from_table(table, schema, seq_len)
            # the experts' own run reads no signal
            zt = {c: torch.from_numpy(table.column(c).to_numpy(zero_copy_only=False).astype(np.float32))
                  for c in channels if c in table.column_names}
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
                f"{m.name} {m.rows:,} rows {m.rows / max(m.train_seconds(), 1e-9):,.0f}/s" for m in group.members), flush=True)
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
    # the teacher from its stored weights: scored on the cold users' rows beside the students
    # (η's teacher there), or on each expert's slice beside the experts
    teacher = _stored_teacher(ctx, config, COLD_TEACHER if config.get(COLD_TEACHER) else SLICE_TEACHER)
    if teacher is not None:
        models[TEACHER] = teacher
        keep[TEACHER] = ctx.cfg.teacher.negative_keep_rate
    slices = ({m.name: [m.part] for m in group.members if m.part >= 0} if config.get(TRAIN_EXPERTS) else {})
    if slices and teacher is not None:
        slices[TEACHER] = sorted(k for ks in slices.values() for k in ks)
    ev = score_test(ctx, config, models, keep, slices=slices)
    members = {m.name: {**ev.metrics(m.name), "params": m.model.num_params(), **m.summary(),
                        **_cold_metrics(ev, m.name), **_slice_metrics(ev, m.name, [m.part] if m.part >= 0 else [])}
               for m in group.members}
    timing["eval_s"] = time.perf_counter() - t_eval
    extra = ({TEACHER: {**_cold_metrics(ev, TEACHER), **_slice_metrics(ev, TEACHER, slices.get(TEACHER, []))}}
             if teacher is not None else {})
    finish({"members": members, "threads": ctx.threads, "resumed": resumed, "batches": batches, "device": device.type,
            "node": ray.get_runtime_context().get_node_id(),
            **({FOLLOW: follower.counts} if follower is not None else {}),
            **extra, **timing, **{k: v for k, v in last.items() if k not in (LIVE, TRAINS_ON)}}, rank,
           {m.name: m.model for m in group.members})


TEACHER = "teacher"
TRAIN_EXPERTS = "train_experts"  # loop-config: this run trains a committee's experts on their slices
EXPERT_WEIGHTS = "expert_weights"  # loop-config: the experts' weights in the store, for a committee's students
SLICE_TEACHER = "slice_teacher_weights"  # loop-config: the teacher's weights in the store, scored on each slice
COLD_TEACHER = "cold_teacher_weights"  # loop-config: the teacher's weights in the store, to score it on cold users


def _timed(validate: Validator | None, timing: dict[str, float], device: torch.device) -> Validator | None:
    """``validate`` adding its seconds to ``timing["valid_s"]`` (wherever it runs: mid-epoch,
    inside ``feed_s``, or at an epoch's end), so a run's results say what its members'
    validation cost beside their training and test scoring. Its clock starts once the
    device has run the training steps queued before it (theirs, in the members' seconds)."""
    if validate is None:
        return None

    def timed(models: dict[str, Any]) -> dict[str, float]:
        t = synced_clock(device)
        try:
            return validate(models)
        finally:
            timing["valid_s"] += synced_clock(device) - t
    return timed


def _cold_metrics(ev: Any, name: str) -> dict[str, Any]:
    """A model's figures on the cold users' test rows (``engine.cold``), when scored there."""
    cold = f"{name}{COLD_SUFFIX}"
    return {"cold": ev.metrics(cold)} if cold in ev.names and ev.acc[cold].n else {}


def load_experts(ctx: Any, store_uri: str, paths: list[str]) -> list[torch.nn.Module]:
    """A committee's frozen experts from their weights in the signal store."""
    from recdistill.train.committee import build_expert

    return [_from_store(build_expert(ctx.cfg, ctx.spec, k, sparse_embeddings=False), store_uri, path,
                        f"committee.experts: expert {k}").to(ctx.device) for k, path in enumerate(paths)]


def _stored_teacher(ctx: Any, config: dict[str, Any], key: str) -> torch.nn.Module | None:
    """The teacher from its stored weights, when the loop config names them under ``key``."""
    path = config.get(key)
    if not path:
        return None
    from recdistill.train.plan import build_model

    model = build_model(ctx.spec, ctx.cfg.teacher, "single", 0, sparse_embeddings=False)
    return _from_store(model, config["store"], path, f"{key}: the teacher").to(ctx.device)


def _slice_metrics(ev: Any, name: str, parts: list[int]) -> dict[str, Any]:
    """A model's figures on the test rows of each committee slice it was scored on."""
    got = {k: ev.metrics(slice_name(name, k)) for k in parts
           if slice_name(name, k) in ev.names and ev.acc[slice_name(name, k)].n}
    return {"slices": {str(k): m for k, m in got.items()}} if got else {}


def _from_store(model: torch.nn.Module, store_uri: str, path: str, what: str) -> torch.nn.Module:
    """``model`` with the weights at ``path`` in the signal store (safetensors, no pickle)."""
    import tempfile
    from pathlib import Path

    from safetensors.torch import load_file

    from recdistill.signals.store import SignalStore

    with tempfile.TemporaryDirectory() as d:
        local = Path(d) / "model.safetensors"
        if not SignalStore(store_uri).get_file(path, local):
            raise RuntimeError(f"{what}: its weights are not in the signal store {store_uri} ({path})")
        model.load_state_dict(load_file(str(local)))
    return model


def _tune_metric(live: dict[str, Any]) -> dict[str, float]:
    """The mean validation AUC of the distilled students that validated this epoch (what a
    sweep's scheduler ranks a trial on); nothing when none did."""
    aucs = [k["distill"]["valid_auc"] for k in live.values() if "valid_auc" in k.get("distill", {})]
    return {"valid_auc_distill": float(np.mean(aucs))} if aucs else {}
