"""The two long-running Ray Train loops of the online pipeline.

The teacher walks the windows in time order: the batch phase over the first K windows
(one pass per epoch, recording forward-distillation logits), then each later window:
score it (prequential: before learning from it), run the shift detector, learn from it
with an optimizer step every τ batches (plus replayed rows while replay is on), and
publish its forward logits for the window as a new signal version through the hub.

The student group follows: for each window it waits on the hub for that window's
signals (so it never trains on a window before the teacher's forward pass on it),
scores the window with every student, then trains each on its sample of the window. A
window whose signals do not come within ``stream.signal_timeout_s`` is trained on labels
only (the aux loss is masked) and the gap is reported; the next window distills again.

Both checkpoint at window boundaries through ``ray.train.report`` and resume there.
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recdistill.config import ExperimentConfig
from recdistill.data.sampling import model_sample_mask, unlabelled_row_mask
from recdistill.data.tensors import TensorLog, from_table
from recdistill.metrics import auc
from recdistill.models import FeatureSpec
from recdistill.online.learner import StreamLearner
from recdistill.online.replay import ReplayBuffer
from recdistill.online.shift import ShiftDetector, WindowProfile, profile
from recdistill.online.spool import Spool, read_window
from recdistill.signals.kinds import LOGIT
from recdistill.signals.representations import KIND as REPRESENTATION
from recdistill.signals.representations import (join_representations, layout, staleness, staleness_sums, table_rows,
                                                write_block)
from recdistill.signals.publish import Publisher
from recdistill.signals.store import SignalStore, cached_store
from recdistill.train.evaluate import evaluate
from recdistill.train.loop import predict
from recdistill.train.plan import (build_model, reads_representations, student_init_seed, student_objective,
                                   student_rep_columns, student_sample_seed, student_spec, teacher_init_seed,
                                   teacher_sample_seed)
from recdistill.train.worker import (LIVE, finish, hand_over_weights, save_checkpoint, test_hook_crash, test_hook_dropped,
                                     test_hook_kill_hub, worker_prologue)


def rss_mb() -> float:
    """This worker's resident memory now, in MB (flat across windows is the design goal);
    its peak so far where /proc is missing."""
    import resource

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def profiles_state(past: list[WindowProfile]) -> list[dict[str, Any]]:
    """The shift detector's memory as checkpoint data (tensors and plain dicts: checkpoints
    are loaded as data only, never as pickled objects)."""
    return [{"labels": torch.from_numpy(p.labels), "predictions": torch.from_numpy(p.predictions),
             "fields": [dict(c) for c in p.fields]} for p in past]


def profiles_from_state(state: list[dict[str, Any]]) -> list[WindowProfile]:
    return [WindowProfile(d["labels"].numpy(), d["predictions"].numpy(), [Counter(f) for f in d["fields"]])
            for d in state]


def window_metrics(z: torch.Tensor, rows: TensorLog, negative_keep: float) -> dict[str, float]:
    return evaluate(z, rows, negative_keep)


def student_batch_windows(cfg: ExperimentConfig) -> range:
    """Batch-phase windows the students train on: the teacher alone learns the earliest
    ``teacher.history_fraction`` of them (its forward signals on the first rows of a log
    are too weak to distill from), at least one is left to the students."""
    k = cfg.stream.batch_windows
    return range(min(int(k * cfg.teacher.history_fraction), k - 1), k)


def replay_rows(cfg: ExperimentConfig, batch_size: int) -> int:
    r = cfg.stream.replay_ratio
    return int(round(batch_size * r / (1 - r)))


def _mix(batch: TensorLog, zt: torch.Tensor | None, buffer: ReplayBuffer, n: int
         ) -> tuple[TensorLog, torch.Tensor | None, torch.Tensor | None]:
    """Append ``n`` replayed rows (with the teacher logits they were stored with); also the
    replayed rows' windows as the buffer holds them, on the host (None: none replayed)."""
    drawn = buffer.sample(n)
    if drawn is None:
        return batch, zt, None
    dev = batch.label.device
    rows, logits = drawn[0].to(dev), drawn[1].to(dev)
    mixed = TensorLog.concat([batch, rows])
    return mixed, None if zt is None else torch.cat([zt, logits]), drawn[0].window


def _read(spool: Spool, window: int, seq_len: int) -> tuple[pa.Table, TensorLog]:
    table = read_window(spool, window)
    return table, from_table(table, spool.schema, seq_len)


def online_teacher_loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train

    spool: Spool = config["spool"]
    ctx = worker_prologue(config)
    cfg, seq_len, device = ctx.cfg, ctx.seq_len, ctx.device
    t, s = cfg.teacher, cfg.stream
    model = build_model(ctx.spec, t, "single", teacher_init_seed(cfg)).to(device)
    learner = StreamLearner(model, lr=t.lr, embedding_lr=t.embedding_lr, interval=1)
    detector = ShiftDetector(s.shift_threshold, s.shift_history, s.shift_top_k)
    buffer = ReplayBuffer(s.replay_capacity, teacher_sample_seed(cfg))
    store, hub, key = SignalStore(config["store"]), ray.get_actor(config["hub"]), config["key"]
    st: dict[str, Any] = {"next": 0, "windows": [], "replay_until": -1, "resumed": 0, "seconds": 0.0}
    saved = ctx.saved
    if saved:
        learner.load(saved["learner"])
        buffer.load(saved["buffer"])
        detector.load(profiles_from_state(saved["detector"]))
        st = {**saved["state"], "resumed": saved["state"]["resumed"] + 1}

    publisher = Publisher(store, hub, key)
    # LoopFM online: after the batch phase and after each window it learns, the teacher's
    # table rows of the entities it met, stamped with the latest time it had trained to
    lay = layout(spool.schema, ctx.spec, t.embed_dim, seq_len) if t.representations else None

    def write_representations(tables: list[pa.Table], seq: int) -> None:
        if lay is None:
            return
        tables = [tb for tb in tables if tb.num_rows]
        if tables:
            write_block(store, key, 0, seq, model.features.table.weight,
                        np.concatenate([table_rows(tb, lay) for tb in tables]),
                        max(int(pc.max(tb.column(lay.order_column)).as_py()) for tb in tables))

    def publish(version: int, window: int, ids: np.ndarray, z: np.ndarray, extra: dict[str, Any]) -> None:
        n = cfg.platform.signal_block_rows
        publisher.publish((version, window, seq, ids[start:start + n], z[start:start + n])
                          for seq, start in enumerate(range(0, len(ids), n)))
        if not test_hook_dropped(window):
            publisher.complete(version, window, extra)

    def checkpoint(live: dict[str, Any] | None = None) -> None:
        save_checkpoint({"learner": learner.state(), "buffer": buffer.state(),
                         "detector": profiles_state(detector.state()), "state": dict(st)},
                        {"next": st["next"], **({LIVE: live} if live else {})}, 0)

    def sample(rows: TensorLog) -> torch.Tensor:
        keep = model_sample_mask(rows.row_id.numpy(), rows.label.numpy(), t.sampling_ratio, t.negative_keep_rate,
                                 teacher_sample_seed(cfg))
        return torch.from_numpy(np.flatnonzero(keep))

    if st["next"] == 0:  # the batch phase: one concatenated pass per epoch, forward logits from the first
        t0 = time.perf_counter()
        read = [_read(spool, w, seq_len) for w in range(s.batch_windows)]
        parts = [r[1] for r in read]
        window_of = torch.cat([torch.full((len(p),), w) for w, p in enumerate(parts)])
        rows = TensorLog.concat(parts)
        idx = sample(rows)
        mine = rows.take(idx).to(device)
        recorded = torch.empty(len(idx), device=device)  # on the device until the pass ends: no sync per step
        for epoch in range(t.epochs):
            for start in range(0, len(idx), t.batch_size):
                z = learner.learn(mine.take(slice(start, start + t.batch_size)))
                if epoch == 0:
                    recorded[start:start + len(z)] = z.float()
        recorded = recorded.cpu()
        ids, wins = rows.row_id[idx].numpy(), window_of[idx].numpy()
        write_representations([r[0] for r in read], 0)  # before the signals: a reader of them finds it
        for w in range(s.batch_windows):
            sel = wins == w
            publish(0, w, ids[sel], recorded[sel].numpy(), {"phase": "batch"})
            p = torch.sigmoid(recorded[sel] + np.log(t.negative_keep_rate)).numpy()
            detector.push(profile(rows.label[idx][sel].numpy(), p, rows.cat[idx][sel].numpy(), 10 * s.shift_top_k))
        buffer.add(rows.take(idx), recorded)
        st["batch"] = {"rows": len(idx), "steps": learner.steps, "seconds": time.perf_counter() - t0}
        st["next"] = s.batch_windows
        print(f"[teacher] batch phase: windows 0–{s.batch_windows - 1}, {len(idx):,} rows, {learner.steps} steps, "
              f"{st['batch']['seconds']:.1f} s", flush=True)
        checkpoint()

    learner.interval = s.teacher_update_interval  # τ from here on (None = frozen)
    n_replay = replay_rows(cfg, s.batch_size)
    for w in range(st["next"], s.windows):
        t0 = time.perf_counter()
        table, rows = _read(spool, w, seq_len)
        # prequential: the teacher is scored on the window before it learns from it
        z_all = predict(model, rows, device)
        m = window_metrics(z_all, rows, t.negative_keep_rate)
        if rows.p_true is not None:
            m["oracle_auc"] = auc(rows.label.numpy(), rows.p_true.numpy())
        p_all = torch.sigmoid(z_all + np.log(t.negative_keep_rate)).numpy()
        prof = profile(rows.label.numpy(), p_all, rows.cat.numpy(), 10 * s.shift_top_k)
        shift = detector.score(prof)
        detector.push(prof)
        if shift["fired"]:
            st["replay_until"] = w + s.replay_hold - 1
        replay = s.replay == "always" or (s.replay == "adaptive" and w <= st["replay_until"])
        idx = sample(rows)
        mine = rows.take(idx).to(device)
        recorded = torch.empty(len(idx), device=device)  # on the device until the window ends: no sync per step
        steps0 = learner.steps
        for start in range(0, len(idx), s.batch_size):
            b = mine.take(slice(start, start + s.batch_size))
            n = len(b)
            if replay and s.teacher_update_interval is not None:
                b, _, _ = _mix(b, None, buffer, n_replay)
            recorded[start:start + n] = learner.learn(b)[:n].float()
        recorded = recorded.cpu()
        write_representations([table], w)
        publish(w, w, rows.row_id[idx].numpy(), recorded.numpy(), {"phase": "stream", "replay": replay, **shift})
        buffer.add(rows.take(idx), recorded)
        if s.keep_models == "every":  # the teacher as it is after learning window w
            hand_over_weights(store, {"teacher": model}, lambda n: store.window_weights_path(config["run_id"], w, n))
        st["windows"].append({"window": w, "rows": len(rows), "steps": learner.steps - steps0, "replay": replay,
                              "seconds": time.perf_counter() - t0, "shift": shift, "rss_mb": rss_mb(), **m})
        st["next"] = w + 1
        print(f"[teacher] window {w}: AUC {m['auc']:.4f} before learning it, JS {shift['js']:.4f}"
              f"{' (shift: replay on)' if shift['fired'] else ''}, {learner.steps - steps0} optimizer steps",
              flush=True)
        test_hook_crash("online-teacher", w)
        live = {"window": w, "teacher": {"auc": m["auc"], "js": shift["js"], "steps": learner.steps,
                                         "replay": int(replay)}}
        if (w + 1 - s.batch_windows) % s.checkpoint_every_windows == 0 and w + 1 < s.windows:
            checkpoint(live)
        else:
            ray.train.report({LIVE: live})  # the window, live to the run's trackers
    finish({"windows": st["windows"], "batch": st["batch"], "resumed": st["resumed"], "steps": learner.steps,
             "params": model.num_params(), "device": device.type}, 0, {"teacher": model})


class _Student:
    """One student variant: its learner and its rows."""

    def __init__(self, name: str, learner: StreamLearner, distill: bool, cfg: ExperimentConfig, i: int) -> None:
        st = cfg.students[i]
        self.name, self.learner, self.distill, self.index = name, learner, distill, i
        self.ratio, self.negative_keep, self.seed = st.sampling_ratio, st.negative_keep_rate, student_sample_seed(cfg, i)
        self.batch_size, self.epochs = st.batch_size, st.epochs
        self.unlabelled = st.unlabelled.share if distill else 0.0
        # rows it trained on over the run, with and without labels; its replayed rows in the
        # current window and their summed signal age (windows since the logit was recorded)
        self.labelled_rows = self.unlabelled_rows = self.replayed = self.replayed_age = 0

    def rows(self, rows: TensorLog, zt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Its rows of a window in log order, and which have a label (None: all do): its
        sample, plus (``unlabelled.share``) a seeded share of the others that have a signal."""
        ids = rows.row_id.numpy()
        keep = model_sample_mask(ids, rows.label.numpy(), self.ratio, self.negative_keep, self.seed)
        if not self.unlabelled:
            return torch.from_numpy(np.flatnonzero(keep)), None
        picked = unlabelled_row_mask(ids, keep, self.unlabelled, self.seed) & ~np.isnan(zt.numpy())
        idx = np.flatnonzero(keep | picked)
        return torch.from_numpy(idx), torch.from_numpy(keep[idx])

    def train(self, rows: TensorLog, zt: torch.Tensor, device: torch.device, epochs: int, batch_size: int,
              buffer: ReplayBuffer | None = None, n_replay: int = 0) -> int:
        idx, labelled = self.rows(rows, zt)
        unl = 0 if labelled is None else int((~labelled).sum())
        self.labelled_rows += epochs * (len(idx) - unl)
        self.unlabelled_rows += epochs * unl
        now = int(rows.window.max()) if rows.window is not None and len(rows) else 0  # the window it learns
        mine, z = rows.take(idx).to(device), zt[idx].to(device)
        lm = None if labelled is None else labelled.to(device)
        for _ in range(epochs):
            for start in range(0, len(idx), batch_size):
                b, bz = mine.take(slice(start, start + batch_size)), z[start:start + batch_size]
                blm = None if lm is None else lm[start:start + batch_size]
                if buffer is not None and n_replay:
                    n = len(b)
                    b, bz, replayed = _mix(b, bz, buffer, n_replay)
                    if replayed is not None and len(b) > n:  # a replayed row's logit is as old as its window
                        self.replayed += len(b) - n
                        self.replayed_age += int((now - replayed).sum())  # on the host: no sync per step
                    if blm is not None:  # replayed rows keep their labels
                        blm = torch.cat([blm, torch.ones(len(b) - n, dtype=torch.bool, device=device)])
                self.learner.learn(b, bz if self.distill else None, blm)
        return len(idx)


def _students(cfg: ExperimentConfig, spec: FeatureSpec) -> list[_Student]:
    out = []
    for i, st in enumerate(cfg.students):
        for kind, distill in (("raw", False), ("distill", True)):
            model = build_model(student_spec(cfg, spec, i), st, st.towers, student_init_seed(cfg, i),
                                rep_columns=student_rep_columns(cfg, i))
            learner = StreamLearner(model, lr=st.lr, embedding_lr=st.embedding_lr, interval=1,
                                    objective=student_objective(cfg, i, distill))
            out.append(_Student(f"{st.name}/{kind}", learner, distill, cfg, i))
    return out


def _label_only(cfg: ExperimentConfig, distilled: _Student) -> _Student:
    """The distilled student as it leaves the batch phase, from here on trained on labels."""
    learner = copy.deepcopy(distilled.learner)
    learner.objective = student_objective(cfg, distilled.index, False)
    return _Student(f"{cfg.students[distilled.index].name}/label_only", learner, False, cfg, distilled.index)


def _joined(table: pa.Table, store_uri: str, blocks: list[dict[str, Any]] | None) -> torch.Tensor:
    from recdistill.signals.join import join_signals

    if blocks is None:
        return torch.full((table.num_rows,), float("nan"))
    z = join_signals(table, store_uri, blocks).column(LOGIT).to_numpy(zero_copy_only=False)
    return torch.from_numpy(z.astype(np.float32))


def online_students_loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train

    spool: Spool = config["spool"]
    ctx = worker_prologue(config)
    cfg, seq_len, device = ctx.cfg, ctx.seq_len, ctx.device
    s = cfg.stream
    store, hub, key = config["store"], ray.get_actor(config["hub"]), config["key"]
    students = _students(cfg, ctx.spec)
    for m in students:
        m.learner.model.to(device)
    buffer = ReplayBuffer(s.replay_capacity, cfg.run.seed * 1000 + 99)
    st: dict[str, Any] = {"next": 0, "windows": [], "resumed": 0}
    saved = ctx.saved
    if saved:
        if "label_only" in saved:
            students += [_label_only(cfg, m) for m in students if m.distill]
        for m in students:
            m.learner.load(saved["learners"][m.name])
            m.labelled_rows, m.unlabelled_rows = saved.get("rows", {}).get(m.name, (0, 0))
        buffer.load(saved["buffer"])
        st = {**saved["state"], "resumed": saved["state"]["resumed"] + 1}

    def checkpoint(live: dict[str, Any] | None = None) -> None:
        save_checkpoint({"learners": {m.name: m.learner.state() for m in students}, "buffer": buffer.state(),
                         "rows": {m.name: (m.labelled_rows, m.unlabelled_rows) for m in students},
                         "state": dict(st),
                         **({"label_only": True} if any(m.name.endswith("/label_only") for m in students) else {})},
                        {"next": st["next"], **({LIVE: live} if live else {})}, 0)

    # LoopFM online: each window's rows joined with the teacher's representations as of
    # strictly before each row's time (the teacher writes them before it publishes a window)
    reads = reads_representations(cfg)
    lay = asdict(layout(spool.schema, ctx.spec, cfg.teacher.embed_dim, seq_len)) if reads else None
    found: list[float] = []

    def read(window: int) -> pa.Table:
        table = read_window(spool, window)
        if lay is None:
            return table
        blocks, _ = cached_store(store).scan(key, REPRESENTATION)  # none yet: every value is missing
        table = join_representations(table, store, [b.to_dict() for b in blocks], lay)
        found.append(staleness(staleness_sums(table))["user"]["found"])
        return table

    def wait(window: int, version: int) -> tuple[dict[str, Any] | None, float]:
        t0 = time.perf_counter()
        pending = hub.wait_window.remote(key, version, window, s.signal_timeout_s)
        test_hook_kill_hub(hub, window)  # a test hook: the hub dies with this wait in flight (it is retried)
        got = ray.get(pending)
        return got, time.perf_counter() - t0

    if st["next"] == 0:
        t0 = time.perf_counter()
        tables, zs, waited = [], [], 0.0
        for w in student_batch_windows(cfg):
            got, lag = wait(w, 0)
            waited += lag
            table = read(w)
            tables.append(table)
            zs.append(_joined(table, store, got["blocks"] if got else None))
        table = pa.concat_tables(tables)
        rows, zt = from_table(table, spool.schema, seq_len), torch.cat(zs)
        rows.window = torch.cat([torch.full((t.num_rows,), w, dtype=torch.int32)
                                 for w, t in zip(student_batch_windows(cfg), tables)])
        for m in students:
            m.train(rows, zt, device, m.epochs, m.batch_size)
        buffer.add(rows, zt)
        st["batch"] = {"rows": len(rows), "waited_s": waited, "seconds": time.perf_counter() - t0,
                       "signal_rows": int((~torch.isnan(zt)).sum())}
        st["next"] = s.batch_windows
        print(f"[students] batch phase: windows {student_batch_windows(cfg).start}–{s.batch_windows - 1}, "
              f"{len(rows):,} rows, {st['batch']['seconds']:.1f} s (waited {waited:.1f} s for signals)", flush=True)
    if s.label_only_baseline and not any(m.name.endswith("/label_only") for m in students):
        students += [_label_only(cfg, m) for m in students if m.distill]
    if st["next"] == s.batch_windows and not st["windows"]:
        checkpoint()

    n_replay = replay_rows(cfg, s.batch_size)
    models_store = SignalStore(store)  # where stream.keep_models=every hands each window's students over
    for w in range(st["next"], s.windows):
        t0 = time.perf_counter()
        got, lag = wait(w, w)
        table = read(w)
        rows, zt = from_table(table, spool.schema, seq_len), _joined(table, store, got["blocks"] if got else None)
        rows.window = torch.full((len(rows),), w, dtype=torch.int32)  # the stream window: replayed rows keep it
        # prequential: every student is scored on the window before it learns from it
        metrics = {m.name: window_metrics(predict(m.learner.model, rows, device), rows, m.negative_keep)
                   for m in students}
        replay = bool(got["replay"]) if got else s.replay == "always"
        for m in students:
            m.replayed = m.replayed_age = 0
            m.train(rows, zt, device, 1, s.batch_size, buffer if replay else None, n_replay if replay else 0)
        replayed = sum(m.replayed for m in students if m.distill)
        buffer.add(rows, zt)
        if s.keep_models == "every":  # every student as it is after learning window w
            hand_over_weights(models_store, {m.name: m.learner.model for m in students},
                              lambda n: models_store.window_weights_path(config["run_id"], w, n))
        with_signal = int((~torch.isnan(zt)).sum())
        st["windows"].append({"window": w, "lag_s": lag if got else None, "signals": got is not None,
                              "signal_rows": with_signal, "rows": len(rows), "replay": replay, "members": metrics,
                              # the window's own rows get the logit recorded in it (age 0); replayed rows
                              # carry theirs from their own window
                              "replay_signal_age": sum(m.replayed_age for m in students if m.distill) / replayed
                              if replayed else None,
                              "seconds": time.perf_counter() - t0, "rss_mb": rss_mb(),
                              # the share of its rows whose user had a teacher representation
                              **({"representations_found": found[-1]} if found else {})})
        st["next"] = w + 1
        print(f"[students] window {w}: " + ", ".join(f"{n} {v['auc']:.4f}" for n, v in metrics.items())
              + (f"; waited {lag:.1f} s for signals" if got else f"; NO signals after {lag:.0f} s: labels only"),
              flush=True)
        test_hook_crash("online-students", w)
        live: dict[str, Any] = {"window": w, "signal_rows": with_signal}
        for name, v in metrics.items():
            student, kind = name.rsplit("/", 1)
            live.setdefault(student, {})[kind] = {"auc": v["auc"]}
        if (w + 1 - s.batch_windows) % s.checkpoint_every_windows == 0 and w + 1 < s.windows:
            checkpoint(live)
        else:
            ray.train.report({LIVE: live})  # the window, live to the run's trackers
    finish({"windows": st["windows"], "batch": st["batch"], "resumed": st["resumed"],
             "params": {m.name: m.learner.model.num_params() for m in students}, "device": device.type,
             "rows": {m.name: {"labelled": m.labelled_rows, "unlabelled": m.unlabelled_rows} for m in students}}, 0,
           {m.name: m.learner.model for m in students})
