"""The teacher's Ray Train loop: forward distillation into the signal store.

On its sample of the train split, in log order, the teacher records each row's logit
before it learns from that row, writes the logits block by block to the store and
registers the blocks with the hub; then it may train on (more epochs, early stopping).
It checkpoints through ``ray.train.report`` and resumes from ``ray.train.get_checkpoint``
after a worker failure (``train.worker``). Every rank calls ``report`` at the same steps
(the cadence is a function of the step count, which DDP keeps in lockstep), as Train expects.
Under ``teacher.signals`` posthoc or crossfit it records nothing: once trained, it scores the
"score" dataset (every train row, or its held-out fold) and publishes those logits instead.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch

from recdistill.data.tensors import from_table
from recdistill.data.windows import HISTORY, STUDENT_WINDOW, WINDOW
from recdistill.signals.publish import Publisher
from recdistill.signals.representations import layout, table_rows, write_block
from recdistill.signals.store import SignalStore
from recdistill.train.checkpoint import plain
from recdistill.train.evaluate import EarlyStop, Evaluator
from recdistill.train.loop import optimizers, train_step
from recdistill.train.plan import build_model, teacher_init_seed
from recdistill.train.step_timer import synced_clock
from recdistill.train.worker import (LIVE, WorkerContext, finish, save_checkpoint, score_test, shard_validator,
                                    test_hook_crash, worker_prologue)


def _test_metrics(ctx: WorkerContext, config: dict[str, Any], model: torch.nn.Module,
                  negative_keep: float) -> dict[str, Any]:
    """The teacher (and the oracle, when the log knows p_true) on the test split, merged
    across workers; every rank calls it."""
    ev = score_test(ctx, config, {"teacher": model}, {"teacher": negative_keep}, with_oracle=True)
    out = {"teacher": ev.metrics("teacher")}
    if ev.acc["oracle"].n:
        out["oracle"] = {k: v for k, v in ev.metrics("oracle").items() if k != "gauc"}
    return out


def teacher_loop(config: dict[str, Any]) -> None:
    """Forward distillation on DDP workers. The first epoch records the signals (and their
    AUC on history / window rows); at its end the teacher is scored on test: that is the
    teacher the students learn from. Validation after each epoch (or every ``eval_every``
    steps) and early stopping from the second epoch on; a teacher that trained on after
    its first epoch is scored again as ``final``."""
    import ray
    import ray.train
    import ray.train.torch

    ctx = worker_prologue(config)
    cfg, schema, seq_len, rank, world, device = ctx.cfg, ctx.schema, ctx.seq_len, ctx.rank, ctx.world, ctx.device
    t = cfg.teacher
    model = build_model(ctx.spec, t, "single", teacher_init_seed(cfg), ctx.sparse_embeddings)
    model.to(device)
    opts = optimizers(model, t.lr, t.embedding_lr)
    net = ray.train.torch.prepare_model(model) if world > 1 else model
    # posthoc / crossfit (``teacher.signals``): no recording; the trained teacher scores the
    # "score" dataset after training. A crossfit fold publishes under ranks of its own.
    scoring = bool(config.get("score_signals"))
    publisher = Publisher(SignalStore(config["store"]), ray.get_actor(config["hub"]), config["key"],
                          config.get("publish_rank", 0) + rank)
    # first_step_at: the wall clock at its first step (kept over restarts), for the run's start-up figure
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "seq": 0, "steps": 0, "rows": 0, "seconds": 0.0, "resumed": 0,
                             "first_step_at": None,
                             "checkpoint_s": 0.0, "pass_steps": 0, "recorded": None, "signal_auc": None,
                             "signal_rows": None}
    early = EarlyStop(t.patience, t.eval_every)
    # the recorded signals' AUC on the rows they were recorded for: history (0) and window (1)
    signals = Evaluator(["history", "window"], {})
    saved = ctx.saved
    if saved:
        model.load_state_dict(saved["model"])
        for o, s in zip(opts, saved["opts"]):
            o.load_state_dict(s)
        state = {**saved["state"], "resumed": saved["state"]["resumed"] + 1}
        early.load(saved["early"])
        if rank == 0 and saved["signals"] is not None:  # the merged sums; other ranks add what follows
            signals.load_state(saved["signals"])
    validate = shard_validator(config, schema, seq_len, device)
    # Signals are flushed every ``flush_every`` steps and a checkpoint follows every few
    # flushes: a function of the step count, the same on every rank.
    flush_every = max(1, cfg.platform.signal_block_rows // t.batch_size)
    # (row ids, logits, windows, labels) of the steps since the last block: the logits stay on
    # the device until the block is written (one copy to the host per block, not a sync per step)
    pending: list[tuple[np.ndarray, torch.Tensor, np.ndarray, np.ndarray]] = []
    # LoopFM (``teacher.representations``): the table rows of the entities met since the last
    # block, and the latest time trained on so far
    lay = layout(schema, ctx.spec, t.embed_dim, seq_len) if t.representations else None
    met: list[np.ndarray] = []
    # the latest time trained on, and the latest time of a history row (the semantic IDs'
    # codebook is fitted on the values stamped by then: ``signals.semantic_ids``)
    # (kept in the checkpointed state: a resumed worker's next block is stamped as before)
    trained_to = state.setdefault("trained_to", [np.iinfo(np.int64).min, np.iinfo(np.int64).min])

    def write_representations() -> None:
        """The current table rows of the entities met since the last block, stamped with the
        latest time any worker trained on (every rank calls it at the same steps)."""
        t_max = torch.tensor(trained_to, dtype=torch.int64)
        if world > 1:
            import torch.distributed as dist

            from recdistill.train.evaluate import collective_device

            t_max = t_max.to(collective_device(dist.get_backend()))
            dist.all_reduce(t_max, op=dist.ReduceOp.MAX)
        state["history_to"] = int(t_max[1].item())
        rows = np.concatenate(met) if met else np.zeros(0, np.int64)
        met.clear()
        write_block(publisher.store, config["key"], publisher.rank, state["seq"], model.features.table.weight, rows,
                    int(t_max[0].item()))

    def flush() -> None:
        if lay is not None:
            write_representations()
        if not pending:
            return
        ids, w, y = (np.concatenate([p[k] for p in pending]) for k in (0, 2, 3))
        z = torch.cat([p[1] for p in pending]).cpu().numpy()
        pending.clear()
        publisher.publish((0, int(win), state["seq"], ids[w == win], z[w == win]) for win in np.unique(w))
        state["seq"] += 1
        # per block, not per step: a histogram update costs the same for 1 row or 65k
        for win, name in ((0, "history"), (STUDENT_WINDOW, "window")):
            if (w == win).any():
                signals.update(name, torch.from_numpy(z[w == win]), torch.from_numpy(y[w == win]))

    def live(epoch: int, valid_auc: float | None = None) -> dict[str, Any]:
        """The teacher's progress for the driver's trackers (``engine.live``)."""
        row = {"step": state["steps"], "epoch": epoch, "rows": state["rows"],
               "samples_per_s": state["rows"] / state["seconds"] if state["seconds"] else 0.0}
        return {LIVE: {**row, "valid_auc": valid_auc} if valid_auc is not None else row}

    def checkpoint(extra: dict[str, Any]) -> None:
        t_ck = time.perf_counter()
        merged = None
        if state["signal_auc"] is None:  # still recording: every rank's sums, merged, go with rank 0
            merged = Evaluator(signals.names, {})
            merged.unpack(signals.pack())
            merged.all_reduce()
        # The final checkpoint leaves the optimizers' state out: nothing trains after it (a run
        # resumed there only scores and reports), and the transfer stage reads its model only.
        # Adam's moments are twice the model (at 46.7M parameters, 373 of the file's 560 MB).
        final = extra.get("phase") == "final"
        save_checkpoint({"model": model.state_dict(), "opts": [] if final else [o.state_dict() for o in opts],
                         "state": plain(dict(state)), "early": early.state(),
                         "signals": merged.state() if merged else None},
                        {**extra, **{k: v for k, v in state.items() if k != "recorded"},
                         **live(state["epoch"] + (state["batch"] > 0))}, rank)
        state["checkpoint_s"] += time.perf_counter() - t_ck

    def check(epoch: int) -> None:
        if validate is not None:
            auc = validate({"teacher": model})["teacher"]
            early.observe(auc, epoch + 1, state["steps"], model)
            ray.train.report(live(epoch + 1, auc))  # every rank validated: every rank reports

    def signal_aucs() -> None:
        signals.all_reduce()
        state["signal_auc"] = {n: signals.metrics(n)["auc"] for n in signals.names}
        state["signal_rows"] = {n: signals.metrics(n)["rows"] for n in signals.names}

    def score_signals() -> None:
        """posthoc / crossfit: the trained teacher (its best weights) scores the rows it gives
        signals for, block by block, and publishes them as a recording pass would."""
        model.eval()
        with torch.no_grad():
            for table in ray.train.get_dataset_shard("score").iter_batches(
                    batch_size=cfg.platform.signal_block_rows, batch_format="pyarrow"):
                host = from_table(table, schema, seq_len)
                b = host.to(device)
                z = model(b.cat, b.dense, b.seq)[0].float()
                pending.append((host.row_id.numpy(), z, host.window.numpy(), host.label.numpy()))
                flush()
        model.train()
        signal_aucs()
        state["recorded"] = _test_metrics(ctx, config, model, t.negative_keep_rate)

    def end_of_pass() -> None:
        """The recording pass is over: its signals' AUC and the teacher as it left it."""
        if scoring:  # the signals come from the trained teacher, after training
            state["pass_steps"] = state["steps"]
            return
        signal_aucs()
        state["recorded"] = _test_metrics(ctx, config, model, t.negative_keep_rate)
        state["pass_steps"] = state["steps"]

    shard = ray.train.get_dataset_shard("train")
    stop = early.exhausted and state["epoch"] > 0  # resumed after it stopped
    for epoch in range(state["epoch"], t.epochs):
        if stop:
            break
        skip = state["batch"]
        t0 = time.perf_counter()
        for i, table in enumerate(shard.iter_batches(batch_size=t.batch_size, batch_format="pyarrow")):
            if i < skip:  # already trained on before the restart
                continue
            host = from_table(table, schema, seq_len)
            b = host.to(device)
            main = train_step(net, opts, b)
            if lay is not None and epoch == 0:
                met.append(table_rows(table, lay))
                order = table.column(lay.order_column)
                trained_to[0] = max(trained_to[0], int(pc.max(order).as_py()))
                history = order.filter(pc.equal(table.column(WINDOW), HISTORY))
                if len(history):
                    trained_to[1] = max(trained_to[1], int(pc.max(history).as_py()))
            state["steps"] += 1
            state["rows"] += len(b)
            state["batch"] = i + 1
            if state["first_step_at"] is None:
                state["first_step_at"] = time.time()
            if epoch == 0 and not scoring:
                pending.append((host.row_id.numpy(), main.detach().float(), host.window.numpy(), host.label.numpy()))
                if state["steps"] % flush_every == 0:
                    flush()
                    if rank == 0:
                        el = state["seconds"] + time.perf_counter() - t0
                        print(f"[teacher] {state['rows']:,} rows, {state['steps']} steps, signal block "
                              f"{state['seq']}, {state['rows'] / max(el, 1e-9):,.0f} samples/s", flush=True)
                    if state["seq"] % cfg.platform.checkpoint_every_blocks == 0:
                        state["seconds"] += synced_clock(device) - t0
                        t0 = time.perf_counter()
                        checkpoint({"phase": "train"})
            elif epoch == 0 and state["steps"] % (flush_every * cfg.platform.checkpoint_every_blocks) == 0:
                state["seconds"] += synced_clock(device) - t0  # scoring later: the same cadence, by steps
                t0 = time.perf_counter()
                checkpoint({"phase": "train"})
            if early.due(state["steps"]):
                state["seconds"] += synced_clock(device) - t0
                check(epoch)
                t0 = time.perf_counter()
                if early.exhausted and epoch > 0:  # never inside the recording pass
                    stop = True
                    break
            test_hook_crash("teacher", state["steps"])
        state["seconds"] += synced_clock(device) - t0
        if epoch == 0:
            flush()
            end_of_pass()
        if early.due_at_epoch_end(epoch, t.epochs):
            check(epoch)
        stop = stop or early.exhausted
        state["epoch"], state["batch"] = epoch + 1, 0
        if epoch + 1 < t.epochs and not stop:
            checkpoint({"phase": "epoch"})
    early.finish(model, state["epoch"], state["steps"])  # the epoch it trained in last
    if scoring:
        score_signals()

    t_eval = time.perf_counter()
    recorded = state["recorded"]
    teacher = {**recorded["teacher"], "params": model.num_params(), "signal_auc": recorded["teacher"]["auc"],
               "signal_auc_history": state["signal_auc"]["history"],
               "signal_auc_window": state["signal_auc"]["window"], "signal_rows": state["signal_rows"],
               "pass_steps": state["pass_steps"],
               **early.summary()}
    if not scoring and early.final_step != state["pass_steps"]:  # it learned on (or went back) after recording
        final = _test_metrics(ctx, config, model, t.negative_keep_rate)["teacher"]
        teacher["final"] = {**final, "epochs": early.stopped_epoch, "step": early.final_step}
    metrics = {"teacher": teacher, "threads": ctx.threads, "world": world, "device": device.type,
               "eval_s": time.perf_counter() - t_eval, **{k: v for k, v in state.items() if k != "recorded"}}
    if "oracle" in recorded:
        metrics["oracle"] = recorded["oracle"]
    # The trained teacher (its best weights with early stopping), for users who want to
    # serve or inspect it (and the transfer stage); its signals are already in the store.
    checkpoint({"phase": "final"})
    finish(metrics, rank, {"teacher": model})


