"""The Ray Train loop of the transfer variants: each a student initialised from scratch or
from the teacher's projected embeddings, trained in phases over the offline stream, with
held-out AUC every ``transfer.eval_every`` steps (the learning curve the speed-up is read from).

A phase is (epochs, frozen): with the embeddings frozen only the dense layers learn and the
table gets no gradient at all (cheaper steps, CrossAdapt's phase 1). Training time excludes
the curve's evaluations, so variants compare on the time they spent learning.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np
import torch

from recdistill.config import config_from_dict
from recdistill.data.tensors import from_table
from recdistill.signals.kinds import LOGIT
from recdistill.train.evaluate import Evaluator
from recdistill.train.loop import batch_loss, optimizer_step, optimizers
from recdistill.train.checkpoint import plain
from recdistill.train.plan import build_model, student_init_seed, student_objective
from recdistill.train.step_timer import synced_clock
from recdistill.train.worker import LIVE, WorkerContext, finish, save_checkpoint, test_hook_crash, worker_prologue
from recdistill.transfer.augment import AUGMENTED, load_teacher_state
from recdistill.transfer.projection import project_table


def projected_table(config: dict[str, Any], cfg: Any, spec: Any) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """students[0]'s embedding table with the teacher's embeddings projected into it, and the
    per-field report. Every rank computes the same projection from the same seed, so DDP
    replicas start equal; computed once per run, however many variants start from it."""
    s = cfg.students[0]
    student = build_model(spec, s, s.towers, student_init_seed(cfg, 0), sparse_embeddings=False)
    t = config_from_dict({"teacher": config["teacher_config"]}).teacher
    teacher = build_model(spec, t, "single", 0, sparse_embeddings=False)
    teacher.load_state_dict(load_teacher_state(config["checkpoint"]))
    reports = project_table(teacher.features, student.features, None, cfg.run.seed)
    return student.features.table.weight.detach(), [r.to_dict() for r in reports]


def _auc(model: torch.nn.Module, shard: Any, schema: Any, seq_len: int, device: torch.device,
         negative_keep: float) -> dict[str, float]:
    ev = Evaluator(["s"], {"s": negative_keep})
    model.eval()
    with torch.no_grad():
        for table in shard.iter_batches(batch_size=16384, batch_format="pyarrow"):
            b = from_table(table, schema, seq_len).to(device)
            ev.update("s", model(b.cat, b.dense, b.seq)[0], b.label)
    model.train()
    ev.all_reduce()
    return ev.metrics("s")


def _train_variant(v: dict[str, Any], ctx: WorkerContext, projected: dict[str, Any] | None,
                   resume: dict[str, Any] | None, save: Callable[[dict[str, Any]], None]
                   ) -> tuple[dict[str, Any], torch.nn.Module]:
    """One variant from its initialisation (``projected``: the projected table, its report and
    the seconds it took) to its final test metrics, and the trained model. ``save`` checkpoints the variant at each
    epoch boundary (all but its last); ``resume`` is such a checkpoint to go on from."""
    import ray.train
    import ray.train.torch

    cfg, schema, seq_len, device, world, rank = ctx.cfg, ctx.schema, ctx.seq_len, ctx.device, ctx.world, ctx.rank
    tc, s = cfg.transfer, cfg.students[0]
    model = build_model(ctx.spec, s, s.towers, student_init_seed(cfg, 0), ctx.sparse_embeddings)
    fields, init_s = [], 0.0
    if v["projected"]:
        assert projected is not None
        with torch.no_grad():
            model.features.table.weight.copy_(projected["table"])
        fields, init_s = projected["fields"], projected["seconds"]
    model.to(device)
    objective = student_objective(cfg, 0, True)
    table = model.features.table
    curve_shard = ray.train.get_dataset_shard("curve")
    shard = ray.train.get_dataset_shard(v["dataset"])
    state: dict[str, Any] = {"steps": 0, "rows": 0, "augmented_rows": 0, "seconds": 0.0, "phase_seconds": [],
                             "resumed": 0}

    def point(phase: int) -> dict[str, Any]:
        return {"step": state["steps"], "rows": state["rows"], "seconds": state["seconds"], "phase": phase,
                **_auc(model, curve_shard, schema, seq_len, device, s.negative_keep_rate)}

    name = v["variant"]
    at = (1, 0)  # (phase, epoch within it) to run next
    if resume:
        model.load_state_dict(resume["model"])
        state, curve, at = {**resume["state"], "resumed": resume["state"]["resumed"] + 1}, resume["curve"], \
            (resume["phase"], resume["epoch"])
        # the restored model scored again: equal to the checkpoint's last curve point when the
        # weights came back exactly (the evidence a test compares)
        state["resume_check"] = {"step": curve[-1]["step"], "auc_saved": curve[-1]["auc"],
                                 "auc_restored": _auc(model, curve_shard, schema, seq_len, device,
                                                      s.negative_keep_rate)["auc"]}
    else:
        curve = [point(0)]
    last = (len(v["phases"]), v["phases"][-1][0])
    for p, (epochs, frozen) in enumerate(v["phases"], start=1):
        if p < at[0]:
            continue
        table.weight.requires_grad_(not frozen)
        opts = optimizers(model, s.lr, s.embedding_lr)[1 if frozen else 0:]
        net = ray.train.torch.prepare_model(model) if world > 1 else model
        pull = tc.l2_pull if (p > 1 and not frozen and tc.l2_pull > 0) else 0.0
        anchor = table.weight.detach().clone() if pull else None
        t_phase = 0.0
        first = at[1] if p == at[0] else 0
        if first:  # mid-phase: the phase's optimizers and anchor as they were
            for o, st in zip(opts, resume["opts"]):
                o.load_state_dict(st)
            anchor = resume["anchor"].to(device) if resume["anchor"] is not None else None
            t_phase = resume["t_phase"]
        for epoch in range(first, epochs):
            t0 = time.perf_counter()
            for batch in shard.iter_batches(batch_size=s.batch_size, batch_format="pyarrow"):
                b = from_table(batch, schema, seq_len).to(device)
                zt = torch.from_numpy(batch.column(LOGIT).to_numpy(zero_copy_only=False).astype(np.float32))
                real, n_real = None, len(b)
                if AUGMENTED in batch.column_names:
                    is_real = batch.column(AUGMENTED).to_numpy(zero_copy_only=False) == 0
                    real, n_real = torch.from_numpy(is_real).to(device), int(is_real.sum())  # counted on the host
                main, aux = net(b.cat, b.dense, b.seq)
                loss = batch_loss(net, main, aux, b, objective, zt.to(device), real)
                if anchor is not None:
                    idx = b.cat + model.features.offsets
                    loss = loss + pull * (table(idx) - anchor[idx]).pow(2).sum(-1).mean()
                optimizer_step(opts, loss)
                state["steps"] += 1
                state["rows"] += n_real
                state["augmented_rows"] += len(b) - n_real
                test_hook_crash(f"transfer-{name}", state["steps"])
                if state["steps"] % tc.eval_every == 0:
                    dt = synced_clock(device) - t0
                    state["seconds"] += dt
                    t_phase += dt
                    curve.append(point(p))
                    t0 = time.perf_counter()
            dt = synced_clock(device) - t0
            state["seconds"] += dt
            t_phase += dt
            if epoch + 1 < epochs:
                save({"variant": name, "phase": p, "epoch": epoch + 1, "model": model.state_dict(),
                      "opts": [o.state_dict() for o in opts], "anchor": anchor, "t_phase": t_phase,
                      "state": dict(state), "curve": curve})
        state["phase_seconds"].append(t_phase)
        if curve[-1]["step"] != state["steps"]:
            curve.append(point(p))
        if rank == 0:
            print(f"[transfer {name}] phase {p} ({'embeddings frozen' if frozen else 'joint'}): "
                  f"{state['steps']} steps, curve AUC {curve[-1]['auc']:.4f}, {state['seconds']:.1f} s", flush=True)
        if (p, epochs) != last:  # the next phase starts with fresh optimizers and anchor
            save({"variant": name, "phase": p + 1, "epoch": 0, "model": model.state_dict(), "opts": [],
                  "anchor": None, "t_phase": 0.0, "state": dict(state), "curve": curve})
    table.weight.requires_grad_(True)
    t_eval = time.perf_counter()
    final = _auc(model, ray.train.get_dataset_shard("test"), schema, seq_len, device, s.negative_keep_rate)
    if rank == 0:
        print(f"[transfer {name}] AUC {final['auc']:.4f} after {state['steps']} steps, {state['seconds']:.1f} s "
              f"training", flush=True)
    return {"variant": name, "curve": curve, "fields": fields, "final": final, "params": model.num_params(),
            "init_s": init_s, "eval_s": time.perf_counter() - t_eval, **state}, model


def transfer_loop(config: dict[str, Any]) -> None:
    """Every variant, one after another on the same worker(s): one Ray Train start for all
    (its fixed cost is seconds), each variant timed on its own. Checkpoints at variant and
    epoch boundaries: a restarted worker keeps the finished variants' results and goes on
    with the current one from its last epoch."""
    ctx = worker_prologue(config)
    # the offline sampling's label rebalancing counts as the student's negative down-sampling
    s = dataclasses.replace(ctx.cfg.students[0], negative_keep_rate=config["negative_keep"])
    ctx = dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, students=[s, *ctx.cfg.students[1:]]))
    saved = ctx.saved or {}
    done: dict[str, dict[str, Any]] = saved.get("done", {})
    for result in done.values():  # finished before a restart: their results are the checkpoint's
        result["restored"] = True
    current = saved.get("current")
    todo = [v for v in config["variants"] if v["variant"] not in done]
    projected = None
    if any(v["projected"] for v in todo) and config.get("projected") is not None:
        import ray

        projected = ray.get(config["projected"])  # the old model's, projected on the driver (transfer.old_model)
    elif any(v["projected"] for v in todo):
        t0 = time.perf_counter()
        table, fields = projected_table(config, ctx.cfg, ctx.spec)
        projected = {"table": table, "fields": fields, "seconds": time.perf_counter() - t0}

    sent: dict[str, int] = {}  # curve points already reported live, per variant

    def save(position: dict[str, Any]) -> None:
        # the curve and counters made plain; model and optimizer states are tensors already
        position = {**position, "state": plain(position["state"]), "curve": plain(position["curve"])}
        save_checkpoint({"done": done, "current": position, "weights": weights},
                        {"variant": position["variant"], LIVE: unsent(position["variant"], position["curve"])},
                        ctx.rank)

    def unsent(name: str, curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The curve points not yet reported live: one row each on the transfer/step axis."""
        rows = [{"step": p["step"], name: {"auc": p["auc"], "rows": p["rows"]}} for p in curve[sent.get(name, 0):]]
        sent[name] = len(curve)
        return rows

    # each finished variant's weights ride in the checkpoints, so a restarted worker still
    # hands every variant over as a model artifact (``finish``)
    weights: dict[str, Any] = saved.get("weights", {})
    for v in todo:
        resume = current if current and current["variant"] == v["variant"] else None
        result, model = _train_variant(v, ctx, projected, resume, save)
        done[v["variant"]] = plain(result)
        weights[v["variant"]] = {k: t.detach().cpu() for k, t in model.state_dict().items()}
        tail = unsent(v["variant"], done[v["variant"]]["curve"])
        if len(done) < len(config["variants"]):
            save_checkpoint({"done": done, "current": None, "weights": weights}, {"variant": v["variant"], LIVE: tail},
                            ctx.rank)
    variants = {v["variant"]: done[v["variant"]] for v in config["variants"]}
    finish({"variants": variants, "threads": ctx.threads, "world": ctx.world, "device": ctx.device.type,
            LIVE: tail if todo else []}, ctx.rank, weights)
