"""Held-out metrics accumulated shard by shard and merged across workers, and the
validation that drives early stopping.

Each worker scores its shard of the test (or valid) split; per model it keeps a
StreamingAUC histogram and a few sums, packed into one tensor so DDP workers merge them
with a single all-reduce. Nothing row-level leaves a worker. On the test split it also
keeps Poisson-bootstrap histograms (``metrics.BootstrapAUC``: the test-row part of every
interval) and, where the log has users, GAUC's two sums: a worker that holds whole users
(``user_shard``) computes them exactly, and they add across workers. Every engine (the local
loop, the Ray teacher, the student groups) validates and stops through ``EarlyStop``,
so they stop at the same step.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np
import torch

from recdistill.data.tensors import TensorLog
from recdistill.metrics import (BootstrapAUC, ResampleRows, StreamingAUC, auc, calibration, group_auc, group_auc_sums,
                                log_loss, poisson_weights)
from recdistill.models import Ranker

_BINS = 1 << 20


class UserRows:
    """Every scored row's user, label and probability (GAUC needs a user's rows together),
    in three arrays that grow by doubling. Kept as three small arrays per batch, they sat
    between each batch's large temporaries in the C heap and kept it from shrinking: a
    teacher scoring 1M test rows grew ~600 MB for 20 bytes of data a row (``benchmarks/
    README.md``, "Where the memory goes as the log grows")."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.n = 0
        self.cols = (np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))

    def add(self, users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
        k = len(users)
        if self.n + k > len(self.cols[0]):
            size = max(1 << 16, 2 * len(self.cols[0]), self.n + k)
            grown = tuple(np.empty(size, c.dtype) for c in self.cols)
            for g, c in zip(grown, self.cols):
                g[:self.n] = c[:self.n]
            self.cols = grown
        for c, x in zip(self.cols, (users, labels, probs)):
            c[self.n:self.n + k] = x
        self.n += k

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The rows gathered so far (None when none), and an empty store."""
        if not self.n:
            return None
        u, y, p = (c[:self.n] for c in self.cols)
        self._clear()
        return u, y, p


class Evaluator:
    """``update(name, logits, labels)`` per batch; ``merge``; ``metrics()``. With
    ``replicates`` (pass ``row_ids``) each model's AUC is also taken under that many
    Poisson resamples of the rows; with ``by_user`` (pass ``users``) its GAUC, from the
    users this worker holds whole."""

    def __init__(self, names: list[str], negative_keep: dict[str, float], bins: int = _BINS,
                 replicates: int = 0, by_user: bool = False) -> None:
        self.names = list(names)
        self.shift = {n: math.log(negative_keep.get(n, 1.0)) for n in self.names}
        self.acc = {n: StreamingAUC(bins) for n in self.names}
        self.sums = {n: np.zeros(2) for n in self.names}  # sum of predictions, sum of labels
        self.boot = {n: BootstrapAUC(replicates) for n in self.names}
        self.by_user = by_user
        self.gauc = {n: np.zeros(2) for n in self.names}  # Σ n_u·AUC_u, Σ n_u
        self._rows = {n: UserRows() for n in self.names}
        # the last batch's row ids and their bootstrap weights: every model scored on that
        # batch is weighted alike (a pure function of row id), so they are drawn once
        self._weighed: tuple[torch.Tensor, ResampleRows] | None = None  # ids, their weights (with the host ids)

    def update(self, name: str, logits: torch.Tensor, labels: torch.Tensor, row_ids: torch.Tensor | None = None,
               users: torch.Tensor | None = None) -> None:
        """Logits of a model's main tower; probabilities are corrected for its own extra
        negative down-sampling, so they are calibrated to the test log."""
        p = torch.sigmoid(logits.float() + self.shift[name]).cpu().numpy().astype(np.float64)
        y = labels.cpu().numpy()
        self.acc[name].update(y, p)
        self.sums[name] += (p.sum(), y.sum())
        if row_ids is not None and self.boot[name].replicates:
            ids, w = self._weights(row_ids, y, self.boot[name].replicates)
            self.boot[name].update(y, p, ids, w)
        if self.by_user and users is not None:
            self._rows[name].add(users.cpu().numpy(), y, p)

    def _weights(self, row_ids: torch.Tensor, labels: np.ndarray, replicates: int) -> tuple[np.ndarray, ResampleRows]:
        """``row_ids`` on the host and their ``poisson_weights`` (as ``ResampleRows``), copied
        and drawn again only for another tensor of ids (the one kept here cannot be freed
        and its id reused while it is kept) or other labels, so a GPU batch's ids cross to
        the host once, not once per model."""
        kept = self._weighed
        if (kept is None or kept[0] is not row_ids or kept[1].replicates != replicates
                or not kept[1].same_rows(labels, kept[1].row_ids)):
            ids = row_ids.cpu().numpy()
            self._weighed = (row_ids, ResampleRows(labels, ids, replicates, poisson_weights(ids, replicates)))
        rows = self._weighed[1]
        return rows.row_ids, rows

    def update_probs(self, name: str, probs: torch.Tensor, labels: torch.Tensor) -> None:
        p, y = probs.cpu().numpy().astype(np.float64), labels.cpu().numpy()
        self.acc[name].update(y, p)
        self.sums[name] += (p.sum(), y.sum())

    def _settle_users(self) -> None:
        """GAUC's sums over the rows gathered so far (a user's rows must all be here)."""
        for n, rows in self._rows.items():
            got = rows.take()
            if got is not None:
                u, y, p = got
                self.gauc[n] += group_auc_sums(y, p, u)

    def pack(self) -> torch.Tensor:
        self._settle_users()
        parts = []
        for n in self.names:
            a = self.acc[n]
            parts += [torch.from_numpy(a.pos).double(), torch.from_numpy(a.neg).double(),
                      torch.tensor([a._ll_sum, float(a.n), *self.sums[n], *self.gauc[n]], dtype=torch.float64),
                      torch.from_numpy(self.boot[n].hist).double().flatten()]
        return torch.cat(parts)

    def unpack(self, t: torch.Tensor) -> None:
        off = 0
        for n in self.names:
            a, boot = self.acc[n], self.boot[n]
            b = a.bins
            a.pos = t[off:off + b].round().long().numpy()
            a.neg = t[off + b:off + 2 * b].round().long().numpy()
            ll, cnt, sp, sy, gs, gw = t[off + 2 * b:off + 2 * b + 6].tolist()
            a._ll_sum, a.n, self.sums[n], self.gauc[n] = ll, int(round(cnt)), np.array([sp, sy]), np.array([gs, gw])
            off += 2 * b + 6
            size = boot.hist.size
            boot.hist = t[off:off + size].numpy().reshape(boot.hist.shape).copy()
            off += size

    def all_reduce(self) -> None:
        """Sum every worker's accumulators (no-op on one process), on the device the process
        group's backend reduces on: NCCL (GPU workers) takes CUDA tensors only."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = self.pack().to(collective_device(dist.get_backend()))
            dist.all_reduce(t)
            self.unpack(t.cpu())

    def metrics(self, name: str) -> dict[str, Any]:
        self._settle_users()
        a, (sp, sy) = self.acc[name], self.sums[name]
        out: dict[str, Any] = {"auc": a.auc(), "logloss": a.log_loss(),
                               "calibration": float(sp / sy - 1) if sy > 0 else float("nan"), "rows": a.n}
        if self.by_user:
            total, weight = self.gauc[name]
            out["gauc"] = float(total / weight) if weight else float("nan")
        if self.boot[name].hist.any():
            out["auc_boot"] = self.boot[name].deviations()
        return out

    def state(self) -> dict[str, torch.Tensor]:
        """The accumulators as plain tensors for a checkpoint; sparse, since the histograms of
        a few thousand rows fill a few thousand of their million bins."""
        t = self.pack()
        nz = torch.nonzero(t).flatten()
        return {"size": torch.tensor(len(t)), "index": nz, "value": t[nz]}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        t = torch.zeros(int(state["size"]), dtype=torch.float64)
        t[state["index"]] = state["value"]
        self.unpack(t)


def collective_device(backend: str) -> torch.device:
    """Where a collective's tensors must live under ``backend``: NCCL reduces CUDA tensors
    only (this process's current GPU), gloo CPU tensors; a combined backend
    (``cpu:gloo,cuda:nccl``) takes CPU tensors through gloo."""
    names = str(backend).lower()
    if "nccl" in names and "gloo" not in names:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device("cpu")


def evaluate(z: torch.Tensor, data: TensorLog, negative_keep: float, user_col: int | None = None,
             replicates: int = 0) -> dict[str, Any]:
    """Metrics of main-tower logits held in memory; probabilities are corrected for the
    model's own extra negative down-sampling, so they are calibrated to the test log. With
    ``user_col`` (the user field's column in ``data.cat``), also group AUC by user; with
    ``replicates``, the AUC's Poisson-bootstrap deviations (``auc_boot``) as the Ray
    workers compute them."""
    p = torch.sigmoid(z + math.log(negative_keep)).numpy()
    y = data.label.numpy()
    m: dict[str, Any] = {"auc": auc(y, z.numpy()), "logloss": log_loss(y, p), "calibration": calibration(y, p)}
    if user_col is not None:
        m["gauc"] = group_auc(y, z.numpy(), data.cat[:, user_col].numpy())
    if replicates:
        boot = BootstrapAUC(replicates)
        boot.update(y, p.astype(np.float64), data.row_id.numpy())
        m["auc_boot"] = boot.deviations()
    return m


def user_shard(users: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """The rows of the users this worker scores when every worker reads the whole test
    split: GAUC needs each user's rows on one worker."""
    return (users.long() * 0x9E3779B1 % (1 << 31)) % world == rank


Validator = Callable[[dict[str, Ranker]], dict[str, float]]


def validation_auc(models: dict[str, Ranker], batches: Iterable[TensorLog]) -> dict[str, float]:
    """Validation AUC of each model over one pass of ``batches`` (already on the models'
    device), merged across DDP workers: every worker gets the same numbers, so all of
    them take the same early-stopping decision. Call on every worker."""
    ev = Evaluator(list(models), {})
    for m in models.values():
        m.eval()
    with torch.no_grad():
        for b in batches:
            for name, m in models.items():
                x = b.for_model(m)
                ev.update(name, m(x.cat, x.dense, x.seq)[0], b.label)
    for m in models.values():
        m.train()
    ev.all_reduce()
    return {name: ev.metrics(name)["auc"] for name in models}


class EarlyStop:
    """One model's validation curve and, with ``patience``, its best weights.

    A validation is better when its AUC is strictly higher than every earlier one (NaN, a
    one-class valid split, never is). ``exhausted`` once ``patience`` validations in a row
    were not better; ``finish`` then puts the best weights back. Its ``state`` is plain
    (tensors, numbers, lists), so it rides in the training checkpoints.
    """

    def __init__(self, patience: int = 0, eval_every: int = 0) -> None:
        self.patience, self.eval_every = patience, eval_every
        self.curve: list[dict[str, Any]] = []  # {"epoch": 1-based, "step": optimizer steps so far, "auc"}
        self.best_auc = -math.inf
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self.bad = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stopped_epoch: int | None = None
        self.final_step: int | None = None  # the step whose weights the model ends with

    def due(self, steps: int) -> bool:
        """Whether step ``steps`` ends a validation interval (``eval_every`` > 0)."""
        return self.eval_every > 0 and steps % self.eval_every == 0

    def due_at_epoch_end(self, epoch: int, epochs: int) -> bool:
        """Whether epoch ``epoch`` (0-based) of ``epochs`` ends with a validation: every epoch,
        or, when validating by steps, after the last step."""
        return not self.eval_every or epoch + 1 == epochs

    def observe(self, auc: float, epoch: int, step: int, model: Ranker) -> None:
        if self.curve and self.curve[-1]["step"] == step:
            return  # already validated at this step (an interval that ends with the epoch)
        self.curve.append({"epoch": epoch, "step": step, "auc": auc})
        if auc > self.best_auc:
            self.best_auc, self.best_epoch, self.best_step, self.bad = auc, epoch, step, 0
            if self.patience:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad += 1

    @property
    def exhausted(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    def finish(self, model: Ranker, epoch: int, steps: int) -> None:
        """Training ended in ``epoch`` (1-based) after ``steps`` steps: with patience, restore
        the best weights. Once only: a run resumed after it finished keeps its record."""
        if self.stopped_epoch is not None:
            return
        self.stopped_epoch, self.final_step = epoch, steps
        if self.patience and self.best_state is not None and self.best_step != steps:
            model.load_state_dict(self.best_state)
            self.final_step = self.best_step
        self.best_state = None

    def summary(self) -> dict[str, Any]:
        return {"stopped_epoch": self.stopped_epoch, "best_epoch": self.best_epoch, "best_step": self.best_step,
                "valid_curve": [dict(c) for c in self.curve]}

    def state(self) -> dict[str, Any]:
        return {"curve": [dict(c) for c in self.curve], "best_auc": self.best_auc, "best_epoch": self.best_epoch,
                "best_step": self.best_step, "bad": self.bad, "best_state": self.best_state,
                "stopped_epoch": self.stopped_epoch, "final_step": self.final_step}

    def load(self, state: dict[str, Any]) -> None:
        self.curve = [dict(c) for c in state["curve"]]
        self.best_auc, self.best_epoch, self.best_step = state["best_auc"], state["best_epoch"], state["best_step"]
        self.bad, self.best_state = state["bad"], state["best_state"]
        self.stopped_epoch, self.final_step = state["stopped_epoch"], state["final_step"]
