"""A bounded buffer of past rows for historical replay (CrossAdapt's online stage).

Reservoir sampling (Algorithm R) over every row ever added: the buffer holds a uniform
sample of all past windows in ``capacity`` rows whatever the stream's length, so memory
stays flat. Rows carry the teacher logit they were distilled with (NaN = none).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import torch

from recdistill.data.tensors import TensorLog


class ReplayBuffer:
    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.seen = 0
        self.rows: TensorLog | None = None
        self.logits: torch.Tensor | None = None
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return 0 if self.rows is None else len(self.rows)

    def add(self, rows: TensorLog, logits: torch.Tensor) -> None:
        n = len(rows)
        if n == 0:
            return
        # positions 0..n-1 of this window are stream positions seen..seen+n-1
        stream_pos = self.seen + np.arange(n)
        self.seen += n
        free = max(0, self.capacity - len(self))
        fill = np.arange(min(free, n))
        if fill.size:
            self._append(rows.take(torch.from_numpy(fill)), logits[torch.from_numpy(fill)])
        rest = np.arange(fill.size, n)
        if rest.size:
            slot = (self.rng.random(rest.size) * (stream_pos[rest] + 1)).astype(np.int64)
            keep = slot < self.capacity
            # a later row of this window that draws the same slot wins, as in Algorithm R
            src, dst = rest[keep], slot[keep]
            _, last = np.unique(dst[::-1], return_index=True)
            src, dst = src[::-1][last], dst[::-1][last]
            if dst.size:
                d, s = torch.from_numpy(dst), torch.from_numpy(src)
                for f in fields(self.rows):
                    buf = getattr(self.rows, f.name)
                    if buf is not None:
                        buf[d] = getattr(rows, f.name)[s]
                self.logits[d] = logits[s]

    def _append(self, rows: TensorLog, logits: torch.Tensor) -> None:
        if self.rows is None:
            # a copy: slots are overwritten in place later, and ``rows`` may view a window still in use
            self.rows = TensorLog(**{f.name: None if getattr(rows, f.name) is None else getattr(rows, f.name).clone()
                                     for f in fields(rows)})
            self.logits = logits.clone()
        else:
            self.rows = TensorLog.concat([self.rows, rows])
            self.logits = torch.cat([self.logits, logits])

    def sample(self, n: int) -> tuple[TensorLog, torch.Tensor] | None:
        if not len(self) or n <= 0:
            return None
        idx = torch.from_numpy(self.rng.integers(0, len(self), n))
        return self.rows.take(idx), self.logits[idx]

    def state(self) -> dict[str, Any]:
        """Tensors, ints and the RNG's state dict: a checkpoint payload loadable as data only."""
        rows = None if self.rows is None else {f.name: getattr(self.rows, f.name) for f in fields(self.rows)}
        return {"capacity": self.capacity, "seen": self.seen, "rows": rows, "logits": self.logits,
                "rng": self.rng.bit_generator.state}

    def load(self, state: dict[str, Any]) -> None:
        self.capacity, self.seen = state["capacity"], state["seen"]
        self.rows = None if state["rows"] is None else TensorLog(**state["rows"])
        self.logits = state["logits"]
        self.rng.bit_generator.state = state["rng"]
