"""The per-worker loops Ray Train runs: the teacher (forward distillation into the signal
store) and a student group (one pass over the distill stream for all its students).

Both checkpoint through ``ray.train.report`` and resume from ``ray.train.get_checkpoint``
after a worker failure. Every rank calls ``report`` at the same steps (the cadence is a
function of the step count, which DDP keeps in lockstep), as Train expects.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recdistill.config import config_from_dict
from recdistill.data.tensors import from_table
from recdistill.data.windows import STUDENT_WINDOW
from recdistill.signals.store import LOGIT, SignalStore
from recdistill.train.checkpoint import STATE_FILE, load_dir, plain
from recdistill.train.evaluate import EarlyStop, Evaluator, Validator, validation_auc
from recdistill.train.group import StudentGroup
from recdistill.train.loop import optimizers, train_step
from recdistill.train.plan import (build_model, feature_spec, sequence_length, student_members,
                                   teacher_init_seed)

# A test hook that kills the worker process (a real crash, not an exception) once:
# "<role>:<step>:<marker file>", e.g. "teacher:5:/tmp/x"; several specs separated by ";"
# crash several workers of one run. The marker makes each fire once.
FAIL_ENV = "RECDISTILL_FAIL_ONCE"


def _fail_specs(spec: str) -> list[tuple[str, int, str]]:
    out = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        bits = part.split(":", 2)
        if len(bits) != 3 or not bits[1].lstrip("-").isdigit():
            raise ValueError(f"{FAIL_ENV}={spec!r}: expected '<role>:<step>:<marker file>' specs separated by ';', "
                             f"got {part!r}")
        out.append((bits[0], int(bits[1]), bits[2]))
    return out


def _maybe_fail(role: str, step: int) -> None:
    for want_role, want_step, marker in _fail_specs(os.environ.get(FAIL_ENV, "")):
        if want_role == role and step == want_step and not os.path.exists(marker):
            Path(marker).write_text(f"{role} worker {os.getpid()} killed at step {step}\n")
            # Train's controller takes a worker's last report (and so its checkpoint) off a
            # one-slot queue when it next polls; a crash before that poll loses the checkpoint,
            # which is Train's contract, not the fault this hook simulates. Die after two polls.
            time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")))
            os._exit(1)


# A test hook: windows whose signals the online teacher writes but never marks complete,
# as if it lagged behind or the hub lost them: "3,4".
DROP_ENV = "RECDISTILL_DROP_SIGNALS"
# A test hook: the online students kill the signal hub actor (Ray restarts it) once, while
# their wait for a window's signals is in flight: "<window>:<marker file>".
KILL_HUB_ENV = "RECDISTILL_KILL_HUB"
TEST_HOOKS = (FAIL_ENV, DROP_ENV, KILL_HUB_ENV)


def _maybe_kill_hub(hub: Any, window: int) -> None:
    spec = os.environ.get(KILL_HUB_ENV, "")
    if not spec:
        return
    want, marker = spec.split(":", 1)
    if window == int(want) and not os.path.exists(marker):
        import ray

        Path(marker).write_text(f"hub killed by students worker {os.getpid()} waiting on window {window}\n")
        ray.kill(hub, no_restart=False)


def _dropped(window: int) -> bool:
    spec = os.environ.get(DROP_ENV, "")
    return bool(spec) and window in {int(x) for x in spec.split(",") if x}


def _quiet_train_logs() -> None:
    """Ray Train logs every report (metrics included) at INFO from a logger named after
    its file, which ``LoggingConfig`` does not reach; long runs drowned the progress lines."""
    from recdistill.ray_env import quiet_train_worker

    quiet_train_worker()


def _threads(cfg: Any) -> int:
    import ray.train

    if cfg.platform.torch_threads:
        n = cfg.platform.torch_threads
    else:
        local = max(1, ray.train.get_context().get_local_world_size())
        n = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
                // local)
    torch.set_num_threads(n)
    return n


def _save(payload: dict[str, Any], metrics: dict[str, Any], rank: int) -> None:
    """Report ``metrics``; rank 0 attaches a checkpoint holding ``payload``."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(payload, os.path.join(d, STATE_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _finish(metrics: dict[str, Any], rank: int) -> None:
    """The last report: metrics and a checkpoint of a few bytes (Train returns a run's
    metrics with its checkpoint; the models themselves were saved by the epoch checkpoints)."""
    import json

    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        Path(d, "metrics.json").write_text(json.dumps(metrics, default=str))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _restore() -> dict[str, Any] | None:
    """The payload of the run's latest checkpoint (loaded as data only), None on a fresh start."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return load_dir(d)


def _shard_validator(config: dict[str, Any], schema: Any, seq_len: int, device: torch.device) -> Validator | None:
    """Validation AUC on this worker's shard of the valid split, merged across workers
    (None when the driver found the split empty and passed no "valid" dataset)."""
    import ray.train

    if not config.get("valid_rows"):
        return None
    shard = ray.train.get_dataset_shard("valid")
    return lambda models: validation_auc(models, (
        from_table(t, schema, seq_len).to(device)
        for t in shard.iter_batches(batch_size=16384, batch_format="pyarrow")))


def _test_metrics(model: torch.nn.Module, schema: Any, seq_len: int, device: torch.device,
                  negative_keep: float) -> dict[str, Any]:
    """The teacher (and the oracle, when the log knows p_true) on the test split, merged
    across workers; every rank calls it."""
    import ray.train

    ev = Evaluator(["teacher", "oracle"], {"teacher": negative_keep})
    model.eval()
    with torch.no_grad():
        for table in ray.train.get_dataset_shard("test").iter_batches(batch_size=16384, batch_format="pyarrow"):
            b = from_table(table, schema, seq_len).to(device)
            ev.update("teacher", model(b.cat, b.dense, b.seq)[0], b.label)
            if b.p_true is not None:
                ev.update_probs("oracle", b.p_true, b.label)
    model.train()
    ev.all_reduce()
    out = {"teacher": ev.metrics("teacher")}
    if ev.acc["oracle"].n:
        out["oracle"] = ev.metrics("oracle")
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

    _quiet_train_logs()
    cfg = config_from_dict(config["cfg"])
    schema, t = config["schema"], cfg.teacher
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = _threads(cfg)
    device = ray.train.torch.get_device()
    # NCCL cannot all-reduce sparse gradients: dense embeddings for multi-GPU DDP
    sparse = not (world > 1 and device.type == "cuda")
    model = build_model(feature_spec(schema, config["buckets"]), t, "single", teacher_init_seed(cfg), sparse)
    model.to(device)
    opts = optimizers(model, t.lr, t.embedding_lr)
    net = ray.train.torch.prepare_model(model) if world > 1 else model
    store, hub = SignalStore(config["store"]), ray.get_actor(config["hub"])
    key, seq_len = config["key"], sequence_length(cfg)
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "seq": 0, "steps": 0, "rows": 0, "seconds": 0.0, "resumed": 0,
                             "checkpoint_s": 0.0, "pass_steps": 0, "recorded": None, "signal_auc": None,
                             "signal_rows": None}
    early = EarlyStop(t.patience, t.eval_every)
    # the recorded signals' AUC on the rows they were recorded for: history (0) and window (1)
    signals = Evaluator(["history", "window"], {})
    saved = _restore()
    if saved:
        model.load_state_dict(saved["model"])
        for o, s in zip(opts, saved["opts"]):
            o.load_state_dict(s)
        state = {**saved["state"], "resumed": saved["state"]["resumed"] + 1}
        early.load(saved["early"])
        if rank == 0 and saved["signals"] is not None:  # the merged sums; other ranks add what follows
            signals.load_state(saved["signals"])
    validate = _shard_validator(config, schema, seq_len, device)
    # Signals are flushed every ``flush_every`` steps and a checkpoint follows every few
    # flushes: a function of the step count, the same on every rank.
    flush_every = max(1, cfg.platform.signal_block_rows // t.batch_size)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        ids, z, w, y = (np.concatenate(x) for x in zip(*pending))
        pending.clear()
        metas = [store.write_block(key, 0, int(win), rank, state["seq"], ids[w == win], z[w == win]).to_dict()
                 for win in np.unique(w)]
        ray.get(hub.register.remote(metas))
        state["seq"] += 1
        # per block, not per step: a histogram update costs the same for 1 row or 65k
        for win, name in ((0, "history"), (STUDENT_WINDOW, "window")):
            if (w == win).any():
                signals.update(name, torch.from_numpy(z[w == win]), torch.from_numpy(y[w == win]))

    def checkpoint(extra: dict[str, Any]) -> None:
        t_ck = time.perf_counter()
        merged = None
        if state["signal_auc"] is None:  # still recording: every rank's sums, merged, go with rank 0
            merged = Evaluator(signals.names, {})
            merged.unpack(signals.pack())
            merged.all_reduce()
        _save({"model": model.state_dict(), "opts": [o.state_dict() for o in opts], "state": plain(dict(state)),
               "early": early.state(), "signals": merged.state() if merged else None},
              {**extra, **{k: v for k, v in state.items() if k != "recorded"}}, rank)
        state["checkpoint_s"] += time.perf_counter() - t_ck

    def check(epoch: int) -> None:
        if validate is not None:
            early.observe(validate({"teacher": model})["teacher"], epoch + 1, state["steps"], model)

    def end_of_pass() -> None:
        """The recording pass is over: its signals' AUC and the teacher as it left it."""
        signals.all_reduce()
        state["signal_auc"] = {n: signals.metrics(n)["auc"] for n in signals.names}
        state["signal_rows"] = {n: signals.metrics(n)["rows"] for n in signals.names}
        state["recorded"] = _test_metrics(model, schema, seq_len, device, t.negative_keep_rate)
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
            b = from_table(table, schema, seq_len).to(device)
            main = train_step(net, opts, b)
            state["steps"] += 1
            state["rows"] += len(b)
            state["batch"] = i + 1
            if epoch == 0:
                pending.append((b.row_id.cpu().numpy(), main.float().cpu().numpy(), b.window.cpu().numpy(),
                                b.label.cpu().numpy()))
                if state["steps"] % flush_every == 0:
                    flush()
                    if rank == 0:
                        el = state["seconds"] + time.perf_counter() - t0
                        print(f"[teacher] {state['rows']:,} rows, {state['steps']} steps, signal block "
                              f"{state['seq']}, {state['rows'] / max(el, 1e-9):,.0f} samples/s", flush=True)
                    if state["seq"] % cfg.platform.checkpoint_every_blocks == 0:
                        state["seconds"] += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        checkpoint({"phase": "train"})
            if early.due(state["steps"]):
                state["seconds"] += time.perf_counter() - t0
                check(epoch)
                t0 = time.perf_counter()
                if early.exhausted and epoch > 0:  # never inside the recording pass
                    stop = True
                    break
            _maybe_fail("teacher", state["steps"])
        state["seconds"] += time.perf_counter() - t0
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

    t_eval = time.perf_counter()
    recorded = state["recorded"]
    teacher = {**recorded["teacher"], "params": model.num_params(), "signal_auc": recorded["teacher"]["auc"],
               "signal_auc_history": state["signal_auc"]["history"],
               "signal_auc_window": state["signal_auc"]["window"], "signal_rows": state["signal_rows"],
               "pass_steps": state["pass_steps"],
               **early.summary()}
    if early.final_step != state["pass_steps"]:  # it learned on (or went back) after recording
        final = _test_metrics(model, schema, seq_len, device, t.negative_keep_rate)["teacher"]
        teacher["final"] = {**final, "epochs": early.stopped_epoch, "step": early.final_step}
    metrics = {"teacher": teacher, "threads": threads, "world": world, "device": device.type,
               "eval_s": time.perf_counter() - t_eval, **{k: v for k, v in state.items() if k != "recorded"}}
    if "oracle" in recorded:
        metrics["oracle"] = recorded["oracle"]
    # The trained teacher (its best weights with early stopping), for users who want to
    # serve or inspect it (and the transfer stage); its signals are already in the store.
    checkpoint({"phase": "final"})
    _finish(metrics, rank)


def students_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    _quiet_train_logs()
    cfg = config_from_dict(config["cfg"])
    schema, seq_len = config["schema"], sequence_length(cfg)
    threads = _threads(cfg)
    device = ray.train.torch.get_device()
    group = StudentGroup(student_members(cfg, feature_spec(schema, config["buckets"]), config["students"],
                                         config.get("skip_raw", ())), device,
                         _shard_validator(config, schema, seq_len, device))
    # ``batches`` counts stream batches over the whole run (restored on resume), so the
    # failure hook's step names one point of the run however often it restarted
    start, resumed, batches = 0, 0, 0
    saved = _restore()
    if saved:
        group.load(saved["group"])
        start, resumed, batches = saved["epoch"], saved["resumed"] + 1, saved["batches"]
    rank = ray.train.get_context().get_world_rank()
    shard = ray.train.get_dataset_shard("train")
    timing = {"data_s": 0.0, "feed_s": 0.0, "checkpoint_s": 0.0}
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
            _maybe_fail("students", batches)
        group.end_epoch(epoch)
        if rank == 0:
            print(f"[students] epoch {epoch + 1}/{group.epochs}: " + ", ".join(
                f"{m.name} {m.rows:,} rows {m.rows / max(m.seconds, 1e-9):,.0f}/s" for m in group.members), flush=True)
        if epoch + 1 < group.epochs and group.active:  # finished models go straight to scoring
            t_ck = time.perf_counter()
            _save({"group": group.state(), "epoch": epoch + 1, "resumed": resumed, "batches": batches},
                  {"epoch": epoch + 1}, rank)
            timing["checkpoint_s"] += time.perf_counter() - t_ck

    t_eval = time.perf_counter()
    ev = Evaluator([m.name for m in group.members], {m.name: m.negative_keep for m in group.members})
    with torch.no_grad():
        for m in group.members:
            m.model.eval()
        for table in ray.train.get_dataset_shard("test").iter_batches(batch_size=16384, batch_format="pyarrow"):
            b = from_table(table, schema, seq_len).to(device)
            for m in group.members:
                ev.update(m.name, m.model(b.cat, b.dense, b.seq)[0], b.label)
    ev.all_reduce()
    members = {m.name: {**ev.metrics(m.name), "params": m.model.num_params(), **m.summary()} for m in group.members}
    timing["eval_s"] = time.perf_counter() - t_eval
    _finish({"members": members, "threads": threads, "resumed": resumed, "batches": batches, "device": device.type,
             **timing}, rank)
