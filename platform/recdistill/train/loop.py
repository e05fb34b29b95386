"""The training loop for one model on one process (a Ray Train worker runs the same loop).

Forward distillation: when ``record`` is on, the logit each row gets in the teacher's
training forward pass is kept, so a signal always comes from a teacher that had not yet
learned from that row (Rec-Distill §4.1), at the cost of a copy and not of a second pass.
Signals are recorded in the first epoch only: later epochs have seen every row. Early
stopping (``EarlyStop``) never ends that first epoch early.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from recdistill.data.tensors import TensorLog
from recdistill.distill.losses import task_loss
from recdistill.distill.objective import Objective
from recdistill.models import Ranker
from recdistill.train.evaluate import EarlyStop, Validator
from recdistill.train.step_timer import synced_clock


@dataclass
class FitStats:
    rows: int
    steps: int
    seconds: float
    pass_steps: int = 0  # steps of the first epoch (a teacher's recording pass)
    early: EarlyStop | None = None  # the validation curve and where it stopped

    @property
    def samples_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but no CUDA device is visible")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def optimizers(model: Ranker, lr: float, embedding_lr: float) -> list[torch.optim.Optimizer]:
    """SparseAdam on the embedding table (rows touched by a batch only), Adam on the rest.

    Dense Adam over a table of millions of rows would rewrite all of it every step.
    """
    emb = torch.optim.SparseAdam if model.features.table.sparse else torch.optim.Adam
    return [emb(model.embedding_params(), lr=embedding_lr), torch.optim.Adam(model.dense_params(), lr=lr)]


def batch_loss(model: Ranker, main: torch.Tensor, aux: torch.Tensor, batch: TensorLog,
               objective: Objective | None, teacher_logits: torch.Tensor | None,
               label_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The loss to backpropagate for one forward pass: the task loss, or the objective with
    the teacher's logits (NaN = no signal: that row's distill loss is masked out).
    ``label_mask`` marks rows with a click label (augmented rows have only the teacher's)."""
    if objective is None:
        return task_loss(main, batch.label, label_mask)
    zt = mask = None
    if teacher_logits is not None:
        mask = ~torch.isnan(teacher_logits)
        zt = torch.nan_to_num(teacher_logits)
    decoupled = getattr(model, "module", model).decoupled  # DDP wraps the Ranker
    return objective(main, aux, decoupled, batch.label, zt, mask, label_mask)["total"]


def optimizer_step(opts: list[torch.optim.Optimizer], loss: torch.Tensor, *, apply: bool = True) -> None:
    """Backpropagate ``loss`` and, with ``apply``, step every optimizer and drop the
    gradients (set to None, so the next backward starts from none). ``apply=False`` only
    accumulates: the stream learner's update interval steps on several batches' gradients."""
    loss.backward()
    if apply:
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)


def train_step(model: Ranker, opts: list[torch.optim.Optimizer], batch: TensorLog, *,
               objective: Objective | None = None, teacher_logits: torch.Tensor | None = None,
               label_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One optimizer step on one batch (already on the model's device); returns the main
    logits of the forward pass, detached (the teacher's forward-distillation signals).

    NaN teacher logits mark rows without a signal: their distill loss is masked out;
    ``label_mask`` False marks rows without a label: their task loss is.
    """
    main, aux = model(batch.cat, batch.dense, batch.seq)
    optimizer_step(opts, batch_loss(model, main, aux, batch, objective, teacher_logits, label_mask))
    return main.detach()


def fit(model: Ranker, data: TensorLog, *, epochs: int, batch_size: int, lr: float, embedding_lr: float,
        device: torch.device, objective: Objective | None = None, teacher_logits: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None, record: bool = False, validate: Validator | None = None, eval_every: int = 0, patience: int = 0,
        on_pass_end: Callable[[Ranker], None] | None = None) -> tuple[FitStats, torch.Tensor | None]:
    """Train in log order; return stats and, with ``record``, the forward-distillation logits.

    With ``validate`` (valid AUC of ``{"model": model}``) the model is validated after each
    epoch or every ``eval_every`` steps and, with ``patience``, stops early and ends with its
    best weights (``EarlyStop``). A recording model never stops inside its first epoch: the
    signals need the whole pass. ``on_pass_end`` sees the model as that pass left it.
    """
    model.to(device).train()
    opts = optimizers(model, lr, embedding_lr)
    n = len(data)
    # on the device until training ends: a copy to the host per step would sync a GPU per step
    recorded = torch.full((n,), float("nan"), device=device) if record else None
    d = data.to(device)
    zt_all = teacher_logits.to(device) if teacher_logits is not None else None
    lm_all = label_mask.to(device) if label_mask is not None else None
    early = EarlyStop(patience, eval_every)
    aside = 0.0  # seconds spent validating and in on_pass_end: not training throughput

    def check(epoch: int) -> None:
        nonlocal aside
        if validate is not None:
            t_v = synced_clock(device)  # the steps still queued on a GPU are training, not validation
            early.observe(validate({"model": model})["model"], epoch + 1, steps, model)
            aside += time.perf_counter() - t_v

    steps = rows = pass_steps = 0
    epoch = 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for start in range(0, n, batch_size):
            end = min(start + batch_size, n)
            main = train_step(model, opts, d.take(slice(start, end)), objective=objective,
                              teacher_logits=None if zt_all is None else zt_all[start:end],
                              label_mask=None if lm_all is None else lm_all[start:end])
            if recorded is not None and epoch == 0:
                recorded[start:end] = main.float()
            steps += 1
            rows += end - start
            if early.due(steps):
                check(epoch)
                if early.exhausted and not (record and epoch == 0):
                    break
        if epoch == 0:
            pass_steps = steps
            if on_pass_end is not None:
                t_p = synced_clock(device)
                on_pass_end(model)
                aside += time.perf_counter() - t_p
        if early.due_at_epoch_end(epoch, epochs):
            check(epoch)  # per epoch, or after the last step when validating by steps
        if early.exhausted:
            break
    early.finish(model, epoch + 1, steps)
    return (FitStats(rows, steps, synced_clock(device) - t0 - aside, pass_steps, early),
            None if recorded is None else recorded.cpu())


@torch.no_grad()
def predict(model: Ranker, data: TensorLog, device: torch.device, batch_size: int = 16_384) -> torch.Tensor:
    """Main-tower logits for every row, on the CPU."""
    model.to(device).eval()
    out = []
    for start in range(0, len(data), batch_size):
        b = data.take(slice(start, start + batch_size)).for_model(model).to(device)
        out.append(model(b.cat, b.dense, b.seq)[0].float().cpu())
    model.train()
    return torch.cat(out) if out else torch.zeros(0)
