"""Several students trained in one pass over the distill stream (plain PyTorch, no Ray).

Each member (a student, raw or distilled) picks its own rows from every incoming batch
with its sample mask and re-batches them to its own batch size, so it sees exactly the
batches it would see training alone on its sample in log order (a distilled member with
``unlabelled_share`` also takes a seeded share of the other rows that have a teacher
signal, in the same batches, its task loss masked on them); adding a member adds
its own compute and no data pass. Members are independent: no shared parameters.

With a validator, each member validates and stops on its own, exactly as ``fit`` would
alone (``EarlyStop``: after each of its epochs or every ``eval_every`` of its steps); a
stopped member takes no more rows and ends with its best weights, the others train on.
"""

from __future__ import annotations

from typing import Any

from dataclasses import dataclass, field

import numpy as np
import torch

from recdistill.data.sampling import student_row_mask, unlabelled_row_mask
from recdistill.data.tensors import TensorLog
from recdistill.distill.objective import Objective
from recdistill.models import Ranker
from recdistill.signals.kinds import LOGIT
from recdistill.train.evaluate import EarlyStop, Validator
from recdistill.train.committee import Committee, passes_summary
from recdistill.train.loop import optimizers, train_step
from recdistill.train.step_timer import StepTimer


@dataclass
class Member:
    name: str  # "<student>/raw" or "<student>/distill"
    model: Ranker
    objective: Objective
    uses_teacher: bool
    ratio: float  # the share of the students' window it samples
    negative_keep: float
    seed: int
    batch_size: int
    epochs: int
    lr: float
    embedding_lr: float
    rows: int = 0
    steps: int = 0
    seconds: float = 0.0
    signal_rows: int = 0  # rows trained with a teacher signal present
    eval_every: int = 0
    patience: int = 0
    min_recency: int = 0  # rows: recent — only rows whose recency tag is at least this
    sample_rows: int = 0  # rows of its sample (picked in the first epoch, stopped or not)
    unlabelled_share: float = 0.0  # share of the rows outside its sample it trains on without labels
    unlabelled_rows: int = 0  # of those, the rows with a teacher signal (picked in the first epoch)
    unlabelled_without_signal: int = 0  # picked but left out: no signal, so nothing to learn from them
    unlabelled_trained: int = 0  # rows trained on without a label, over all epochs (part of ``rows``)
    done: bool = False  # stopped early or through its epochs
    part: int = -1  # a committee's expert: only the rows tagged with this slice (``data.expert_slices``)
    source: str = "teacher"  # whose logits it distils (``students.N.distill_from``; ``train.committee``)
    channel: str = LOGIT  # the stream column of its teacher's logits (a seed's own teacher: ``seed_channel``)
    expert: int = -1  # source "expert": which
    qa: Any = None  # source committee / filtered: its question-answer module (dropped after training)
    threshold: float = 0.0  # source filtered: the importance below which a teacher is skipped
    align_weight: float = 0.0
    passes: int = 0  # the experts' forward passes it ran ...
    passes_possible: int = 0  # ... and would have run without filtering
    reads: int = 0  # the big teacher's stored logits it used ...
    reads_possible: int = 0  # ... of those there were
    early: EarlyStop = field(init=False)
    opts: list[torch.optim.Optimizer] = field(default_factory=list)
    _parts: list[tuple[TensorLog, torch.Tensor | None, torch.Tensor | None]] = field(default_factory=list)
    _buffered: int = 0
    _clock: StepTimer = field(default_factory=StepTimer)

    def __post_init__(self) -> None:
        self.early = EarlyStop(self.patience, self.eval_every)

    def push(self, rows: TensorLog, zt: torch.Tensor | None, labelled: torch.Tensor | None = None) -> None:
        """Rows in log order, their teacher logits and which of them have a label (None: all)."""
        self._parts.append((rows, zt, labelled))
        self._buffered += len(rows)

    def pop(self, n: int) -> tuple[TensorLog, torch.Tensor | None, torch.Tensor | None]:
        rows = TensorLog.concat([p[0] for p in self._parts])
        zt, lm = (None if self._parts[0][j] is None else torch.cat([p[j] for p in self._parts]) for j in (1, 2))
        n = min(n, len(rows))
        rest = len(rows) - n

        def cut(x: torch.Tensor | None, part: slice) -> torch.Tensor | None:
            return None if x is None else x[part]

        self._parts = [(rows.take(slice(n, None)), cut(zt, slice(n, None)), cut(lm, slice(n, None)))] if rest else []
        self._buffered = rest
        return rows.take(slice(0, n)), cut(zt, slice(0, n)), cut(lm, slice(0, n))

    def count(self, *, passes: int, possible: int, reads: int, reads_possible: int, signal: int) -> None:
        """A committee step's teacher use (``train.committee``)."""
        self.passes += passes
        self.passes_possible += possible
        self.reads += reads
        self.reads_possible += reads_possible
        self.signal_rows += signal

    def train_seconds(self) -> float:
        """Seconds in its training steps so far (on a GPU, waits for the steps queued)."""
        self.seconds += self._clock.take()
        return self.seconds

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opts": [o.state_dict() for o in self.opts],
                **({"qa": self.qa.state_dict()} if self.qa is not None else {}),
                "passes": [self.passes, self.passes_possible, self.reads, self.reads_possible],
                "rows": self.rows, "steps": self.steps, "seconds": self.train_seconds(), "signal_rows": self.signal_rows,
                "sample_rows": self.sample_rows, "unlabelled_rows": self.unlabelled_rows,
                "unlabelled_without_signal": self.unlabelled_without_signal,
                "unlabelled_trained": self.unlabelled_trained, "done": self.done,
                "early": self.early.state()}

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.qa is not None:
            self.qa.load_state_dict(state["qa"])
        self.passes, self.passes_possible, self.reads, self.reads_possible = state.get("passes", [0, 0, 0, 0])
        for o, s in zip(self.opts, state["opts"]):
            o.load_state_dict(s)
        self.rows, self.steps, self.seconds = state["rows"], state["steps"], state["seconds"]
        self.signal_rows, self.sample_rows, self.done = state["signal_rows"], state["sample_rows"], state["done"]
        self.unlabelled_rows = state.get("unlabelled_rows", 0)
        self.unlabelled_without_signal = state.get("unlabelled_without_signal", 0)
        self.unlabelled_trained = state.get("unlabelled_trained", 0)
        self.early.load(state["early"])

    def summary(self) -> dict:
        """Rows, steps and where it stopped, for results."""
        return {"rows_trained": self.rows, "sample_rows": self.sample_rows, "unlabelled_rows": self.unlabelled_rows,
                "unlabelled_without_signal": self.unlabelled_without_signal,
                "unlabelled_trained": self.unlabelled_trained, "steps": self.steps,
                "seconds": self.train_seconds(), "signal_rows": self.signal_rows, **self.early.summary(),
                **({"distill_from": self.source, **passes_summary(self)} if self.source != "teacher" else {})}


class StudentGroup:
    def __init__(self, members: list[Member], device: torch.device, validate: Validator | None = None,
                 committee: Committee | None = None) -> None:
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"StudentGroup: member names must be unique, got {names}")
        self.members = members
        self.device = device
        self.validate = validate
        self.committee = committee
        for m in members:
            m.model.to(device).train()
            m.opts = optimizers(m.model, m.lr, m.embedding_lr)
            if m.qa is not None:  # trained with its student, by the student's dense learning rate
                m.opts.append(torch.optim.Adam(m.qa.to(device).parameters(), lr=m.lr))
            if m.source != "teacher" and committee is None:
                raise ValueError(f"{m.name} distils from {m.source}: the group needs the committee's experts")

    @property
    def epochs(self) -> int:
        return max(m.epochs for m in self.members)

    @property
    def active(self) -> bool:
        """Whether any member still trains (the pass can end when none does)."""
        return not all(m.done for m in self.members)

    def feed(self, batch: TensorLog, teacher_logits: torch.Tensor | dict[str, torch.Tensor] | None,
             epoch: int) -> None:
        """One batch of the stream (CPU tensors; NaN logits = no signal for that row). Its
        teacher logits: one tensor (the ``LOGIT`` channel) or one per channel (the teachers of
        packed seeds), each member reading its own."""
        ids, y = batch.row_id.numpy(), batch.label.numpy()
        recency = batch.recency.numpy() if batch.recency is not None else None
        channels = teacher_logits if isinstance(teacher_logits, dict) else (
            {} if teacher_logits is None else {LOGIT: teacher_logits})
        # a student's raw and distilled members (and an ablation's variants) sample the same
        # rows: each sample's mask and rows are picked once per batch (read-only, shared)
        samples: dict[tuple, tuple[np.ndarray, torch.Tensor, TensorLog]] = {}
        for m in self.members:
            if epoch >= m.epochs or (m.done and epoch > 0):
                continue
            sample = (m.ratio, m.negative_keep, m.seed, m.min_recency, m.part)
            if sample not in samples:
                mask = student_row_mask(ids, y, recency, m.ratio, m.negative_keep, m.seed, m.min_recency)
                if m.part >= 0:
                    if batch.part is None:
                        raise ValueError(f"{m.name} trains on slice {m.part}, but the rows carry no slice tag")
                    mask &= batch.part.numpy() == m.part
                where = torch.from_numpy(np.flatnonzero(mask))
                samples[sample] = (mask, where, batch.take(where))
            keep, sample_idx, sample_rows = samples[sample]
            labelled = keep
            zt_all = channels.get(m.channel) if m.uses_teacher else None
            if m.unlabelled_share and zt_all is not None:
                picked = unlabelled_row_mask(ids, keep, m.unlabelled_share, m.seed)
                signal = ~np.isnan(zt_all.numpy())
                keep = keep | (picked & signal)
                if epoch == 0:
                    m.unlabelled_rows += int((picked & signal).sum())
                    m.unlabelled_without_signal += int((picked & ~signal).sum())
            if epoch == 0:
                m.sample_rows += int(labelled.sum())
            if m.done or not keep.any():
                continue
            if keep is labelled:  # its sample alone: the rows picked for it already
                idx, rows = sample_idx, sample_rows
            else:
                idx = torch.from_numpy(np.flatnonzero(keep))
                rows = batch.take(idx)
            lm = torch.from_numpy(labelled[idx.numpy()]) if m.unlabelled_share else None
            m.push(rows.for_model(m.model), None if zt_all is None else zt_all[idx], lm)
            while m._buffered >= m.batch_size and not m.done:
                self._step(m, *m.pop(m.batch_size), epoch)

    def end_epoch(self, epoch: int) -> None:
        """Train on what is left in each buffer (the epoch's last, partial batch), validate
        the members whose epoch (or last interval) ends here and stop the exhausted ones."""
        due = []
        for m in self.members:
            if epoch >= m.epochs or m.done:
                continue
            if m._buffered:
                self._step(m, *m.pop(m._buffered), epoch)
            if not m.done and m.early.due_at_epoch_end(epoch, m.epochs):
                due.append(m)
        self._validate(due, epoch)
        for m in self.members:
            if not m.done and (m.early.exhausted or epoch + 1 == m.epochs):
                self._finish(m, epoch)

    def _validate(self, members: list[Member], epoch: int) -> None:
        if self.validate is None or not members:
            return
        aucs = self.validate({m.name: m.model for m in members})
        for m in members:
            m.early.observe(aucs[m.name], epoch + 1, m.steps, m.model)

    def _finish(self, m: Member, epoch: int) -> None:
        m.early.finish(m.model, epoch + 1, m.steps)
        m.done, m._parts, m._buffered = True, [], 0

    def _step(self, m: Member, rows: TensorLog, zt: torch.Tensor | None, labelled: torch.Tensor | None,
              epoch: int) -> None:
        m._clock.start(self.device)
        if zt is not None and m.source == "teacher":  # labelled rows with a signal (every unlabelled row has one)
            has = ~torch.isnan(zt)
            m.signal_rows += int((has if labelled is None else has & labelled).sum())
        if labelled is not None:
            m.unlabelled_trained += int((~labelled).sum())
        if m.source != "teacher":
            assert self.committee is not None
            self.committee.step(m, rows.to(self.device), None if zt is None else zt.to(self.device),
                                None if labelled is None else labelled.to(self.device))
        else:
            train_step(m.model, m.opts, rows.to(self.device), objective=m.objective,
                       teacher_logits=None if zt is None else zt.to(self.device),
                       label_mask=None if labelled is None else labelled.to(self.device))
        m._clock.stop(self.device)
        m.rows += len(rows)
        m.steps += 1
        if m.early.due(m.steps):
            self._validate([m], epoch)
            if m.early.exhausted:
                self._finish(m, epoch)

    def live(self, epoch: int) -> dict[str, Any]:
        """Each member after epoch ``epoch`` (1-based) as ``{student: {raw|distill: {...}}}``:
        rows and steps so far, and the validation AUC when it validated in this epoch."""
        out: dict[str, Any] = {}
        for m in self.members:
            student, kind = m.name.rsplit("/", 1)
            row: dict[str, Any] = {"rows": m.rows, "steps": m.steps}
            if m.early.curve and m.early.curve[-1]["epoch"] == epoch:
                row["valid_auc"] = m.early.curve[-1]["auc"]
            out.setdefault(student, {})[kind] = row
        return out

    def state(self) -> dict:
        return {m.name: m.state() for m in self.members}

    def load(self, state: dict) -> None:
        for m in self.members:
            m.load(state[m.name])
