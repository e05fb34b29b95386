"""A model that keeps learning from a stream of batches, with an update interval.

Asymmetric co-distillation (CrossAdapt's online stage): the student steps its optimizer
every batch, the teacher only every τ batches, its gradients accumulating in between
(the released CrossAdapt code does so), which keeps its signals stable while still
following the stream. τ = 1 is synchronous; ``interval=None`` is a frozen model (τ = ∞).
"""

from __future__ import annotations

from typing import Any

import torch

from recdistill.data.tensors import TensorLog
from recdistill.distill.objective import Objective
from recdistill.models import Ranker
from recdistill.train.loop import batch_loss, optimizer_step, optimizers


class StreamLearner:
    def __init__(self, model: Ranker, *, lr: float, embedding_lr: float, interval: int | None = 1,
                 objective: Objective | None = None) -> None:
        if interval is not None and interval < 1:
            raise ValueError(f"update interval must be >= 1 or None (frozen), got {interval}")
        self.model = model
        self.opts = optimizers(model, lr, embedding_lr)
        self.interval = interval
        self.objective = objective
        self.pending = 0  # batches whose gradients are accumulated but not yet applied
        self.steps = 0  # optimizer steps taken

    def learn(self, batch: TensorLog, teacher_logits: torch.Tensor | None = None,
              label_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Forward ``batch`` (the returned main logits come from the weights as they were
        before this batch: forward distillation), then accumulate its gradient and step when
        the interval is reached."""
        x = batch.for_model(self.model)  # with the teacher representations it reads, if any
        main, aux = self.model(x.cat, x.dense, x.seq)
        if self.interval is None:
            return main.detach()
        loss = batch_loss(self.model, main, aux, batch, self.objective, teacher_logits, label_mask)
        self.pending += 1
        due = self.pending == self.interval
        # the mean gradient over the accumulated batches: τ changes how often, not how far
        optimizer_step(self.opts, loss / self.interval, apply=due)
        if due:
            self.pending = 0
            self.steps += 1
        return main.detach()

    def state(self) -> dict[str, Any]:
        """Model, optimizers and the accumulated gradients (a resume mid-interval keeps them)."""
        grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}
        return {"model": self.model.state_dict(), "opts": [o.state_dict() for o in self.opts], "grads": grads,
                "pending": self.pending, "steps": self.steps}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for o, s in zip(self.opts, state["opts"]):
            o.load_state_dict(s)
        params = dict(self.model.named_parameters())
        for n, g in state["grads"].items():  # checkpoints load on the CPU; the model may be on a GPU
            params[n].grad = g.to(device=params[n].device, dtype=params[n].dtype)
        self.pending, self.steps = state["pending"], state["steps"]
