"""Held-out metrics accumulated shard by shard and merged across workers.

Each worker scores its shard of the test split; per model it keeps a StreamingAUC
histogram and a few sums, packed into one tensor so DDP workers merge them with a
single all-reduce. Nothing row-level leaves a worker.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recdistill.metrics import StreamingAUC

_BINS = 1 << 20


class Evaluator:
    """``update(name, logits, labels)`` per batch; ``merge``; ``metrics()``."""

    def __init__(self, names: list[str], negative_keep: dict[str, float], bins: int = _BINS) -> None:
        self.names = list(names)
        self.shift = {n: math.log(negative_keep.get(n, 1.0)) for n in self.names}
        self.acc = {n: StreamingAUC(bins) for n in self.names}
        self.sums = {n: np.zeros(2) for n in self.names}  # sum of predictions, sum of labels

    def update(self, name: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Logits of a model's main tower; probabilities are corrected for its own extra
        negative down-sampling, so they are calibrated to the test log."""
        p = torch.sigmoid(logits.float() + self.shift[name]).cpu().numpy().astype(np.float64)
        y = labels.cpu().numpy()
        self.acc[name].update(y, p)
        self.sums[name] += (p.sum(), y.sum())

    def update_probs(self, name: str, probs: torch.Tensor, labels: torch.Tensor) -> None:
        p, y = probs.cpu().numpy().astype(np.float64), labels.cpu().numpy()
        self.acc[name].update(y, p)
        self.sums[name] += (p.sum(), y.sum())

    def pack(self) -> torch.Tensor:
        parts = []
        for n in self.names:
            a = self.acc[n]
            parts += [torch.from_numpy(a.pos).double(), torch.from_numpy(a.neg).double(),
                      torch.tensor([a._ll_sum, float(a.n), *self.sums[n]], dtype=torch.float64)]
        return torch.cat(parts)

    def unpack(self, t: torch.Tensor) -> None:
        off = 0
        for n in self.names:
            a = self.acc[n]
            b = a.bins
            a.pos = t[off:off + b].round().long().numpy()
            a.neg = t[off + b:off + 2 * b].round().long().numpy()
            ll, cnt, sp, sy = t[off + 2 * b:off + 2 * b + 4].tolist()
            a._ll_sum, a.n, self.sums[n] = ll, int(round(cnt)), np.array([sp, sy])
            off += 2 * b + 4

    def all_reduce(self) -> None:
        """Sum every worker's accumulators (no-op on one process)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = self.pack()
            dist.all_reduce(t)
            self.unpack(t)

    def metrics(self, name: str) -> dict[str, float]:
        a, (sp, sy) = self.acc[name], self.sums[name]
        return {"auc": a.auc(), "logloss": a.log_loss(),
                "calibration": float(sp / sy - 1) if sy > 0 else float("nan"), "rows": a.n}
