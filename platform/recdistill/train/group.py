"""Several students trained in one pass over the distill stream (plain PyTorch, no Ray).

Each member (a student, raw or distilled) picks its own rows from every incoming batch
with its sample mask and re-batches them to its own batch size, so it sees exactly the
batches it would see training alone on its sample in log order; adding a member adds
its own compute and no data pass. Members are independent: no shared parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from recdistill.data.sampling import model_sample_mask
from recdistill.data.tensors import TensorLog
from recdistill.distill.objective import Objective
from recdistill.models import Ranker
from recdistill.train.loop import optimizers, train_step


@dataclass
class Member:
    name: str  # "<student>/raw" or "<student>/distill"
    model: Ranker
    objective: Objective
    uses_teacher: bool
    ratio: float
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
    opts: list[torch.optim.Optimizer] = field(default_factory=list)
    _parts: list[tuple[TensorLog, torch.Tensor | None]] = field(default_factory=list)
    _buffered: int = 0

    def push(self, rows: TensorLog, zt: torch.Tensor | None) -> None:
        self._parts.append((rows, zt))
        self._buffered += len(rows)

    def pop(self, n: int) -> tuple[TensorLog, torch.Tensor | None]:
        rows = TensorLog.concat([p[0] for p in self._parts])
        zts = [p[1] for p in self._parts]
        zt = torch.cat(zts) if zts[0] is not None else None
        n = min(n, len(rows))
        rest = len(rows) - n
        self._parts = [(rows.take(slice(n, None)), None if zt is None else zt[n:])] if rest else []
        self._buffered = rest
        return rows.take(slice(0, n)), (None if zt is None else zt[:n])

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opts": [o.state_dict() for o in self.opts],
                "rows": self.rows, "steps": self.steps, "seconds": self.seconds, "signal_rows": self.signal_rows}

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for o, s in zip(self.opts, state["opts"]):
            o.load_state_dict(s)
        self.rows, self.steps, self.seconds = state["rows"], state["steps"], state["seconds"]
        self.signal_rows = state["signal_rows"]


class StudentGroup:
    def __init__(self, members: list[Member], device: torch.device) -> None:
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"StudentGroup: member names must be unique, got {names}")
        self.members = members
        self.device = device
        for m in members:
            m.model.to(device).train()
            m.opts = optimizers(m.model, m.lr, m.embedding_lr)

    @property
    def epochs(self) -> int:
        return max(m.epochs for m in self.members)

    def feed(self, batch: TensorLog, teacher_logits: torch.Tensor | None, epoch: int) -> None:
        """One batch of the stream (CPU tensors; NaN logits = no signal for that row)."""
        ids, y = batch.row_id.numpy(), batch.label.numpy()
        for m in self.members:
            if epoch >= m.epochs:
                continue
            keep = model_sample_mask(ids, y, m.ratio, m.negative_keep, m.seed)
            if not keep.any():
                continue
            idx = torch.from_numpy(np.flatnonzero(keep))
            zt = teacher_logits[idx] if (m.uses_teacher and teacher_logits is not None) else None
            m.push(batch.take(idx), zt)
            while m._buffered >= m.batch_size:
                self._step(m, *m.pop(m.batch_size))

    def end_epoch(self, epoch: int) -> None:
        """Train on what is left in each buffer: the epoch's last, partial batch."""
        for m in self.members:
            if epoch < m.epochs and m._buffered:
                self._step(m, *m.pop(m._buffered))

    def _step(self, m: Member, rows: TensorLog, zt: torch.Tensor | None) -> None:
        t0 = time.perf_counter()
        if zt is not None:
            m.signal_rows += int((~torch.isnan(zt)).sum())
        train_step(m.model, m.opts, rows.to(self.device), objective=m.objective,
                   teacher_logits=None if zt is None else zt.to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        m.seconds += time.perf_counter() - t0
        m.rows += len(rows)
        m.steps += 1

    def state(self) -> dict:
        return {m.name: m.state() for m in self.members}

    def load(self, state: dict) -> None:
        for m in self.members:
            m.load(state[m.name])
