"""Students that follow a teacher still training (batch runs, ``platform.students_follow``).

A student group's worker reads the students' window unjoined and joins each batch with
the teacher's logits itself, from the blocks registered with the hub so far. A batch goes
on only when every row of it that the teacher trains on (``model_sample_mask`` of the
teacher's sample: a pure function of row id, label and seed) has its logit, or when no
more can come: the window is marked complete, or the teacher published nothing for
``timeout_s`` (those rows are then masked, as a missing block is, and counted late). Rows
outside the teacher's sample never get a signal, so nobody waits for them.

The joined batches are the sequential run's: the same rows in the same order with the
same logits (``join_signals`` on the same blocks), so every student ends where the
sequential run's does. Later epochs read the joined batches back from the object store
(the sequential run's materialised stream, built during the first pass instead of
before it). Memory in the worker: the batch being joined and the blocks it overlaps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from recdistill.data.sampling import model_sample_mask
from recdistill.data.schema import LABEL, ROW_ID
from recdistill.data.windows import STUDENT_WINDOW
from recdistill.signals.join import join_signals
from recdistill.signals.kinds import LOGIT

FOLLOW = "follow"  # loop-config: the teacher this group follows (``SignalFollower.config``)


@dataclass
class SignalFollower:
    """One student worker's join behind its teacher (``signal_id``, published through
    ``hub``); the teacher's sample is (``ratio``, ``negative_keep``, ``seed``)."""

    hub: Any
    store_uri: str
    signal_id: str
    ratio: float
    negative_keep: float
    seed: int
    timeout_s: float
    poll_s: float = 0.2
    blocks: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    # the first pass's figures: rows, rows with a signal, rows masked because their
    # signal came too late, seconds spent waiting on the teacher
    counts: dict[str, float] = field(default_factory=lambda: {"rows": 0, "with_signal": 0, "late": 0, "wait_s": 0.0})
    _joined: list[Any] = field(default_factory=list)  # object refs of the first pass's joined batches
    _whole: bool = False

    @staticmethod
    def config(hub_name: str, store_uri: str, signal_id: str, ratio: float, negative_keep: float, seed: int,
               timeout_s: float) -> dict[str, Any]:
        return {"hub": hub_name, "store_uri": store_uri, "signal_id": signal_id, "ratio": ratio,
                "negative_keep": negative_keep, "seed": seed, "timeout_s": timeout_s}

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> "SignalFollower":
        import ray

        return cls(ray.get_actor(c["hub"]), c["store_uri"], c["signal_id"], c["ratio"], c["negative_keep"],
                   c["seed"], c["timeout_s"])

    def refresh(self) -> None:
        """The blocks registered so far; whether the window is complete (asked first: a
        window complete before the listing has every block in it)."""
        import ray

        done = ray.get(self.hub.complete.remote(self.signal_id, 0, STUDENT_WINDOW))
        self.blocks = ray.get(self.hub.blocks.remote(self.signal_id, 0, STUDENT_WINDOW))
        self.complete = done is not None

    def join(self, batch: pa.Table) -> pa.Table:
        """``batch`` with the teacher's logit as ``LOGIT``, once each row the teacher trains
        on has one (or none can come)."""
        need = model_sample_mask(batch.column(ROW_ID).to_numpy(), batch.column(LABEL).to_numpy(), self.ratio,
                                 self.negative_keep, self.seed)
        t0 = last_progress = time.perf_counter()
        seen = len(self.blocks)
        while True:
            joined = join_signals(batch, self.store_uri, self.blocks, LOGIT)
            missing = need & np.isnan(joined.column(LOGIT).to_numpy(zero_copy_only=False))
            if not missing.any() or self.complete:
                break
            if time.perf_counter() - last_progress > self.timeout_s:
                self.counts["late"] += int(missing.sum())
                break
            time.sleep(self.poll_s)
            self.refresh()
            if len(self.blocks) != seen:  # the teacher is alive and moving: the clock starts again
                seen, last_progress = len(self.blocks), time.perf_counter()
        self.counts["wait_s"] += time.perf_counter() - t0
        return joined

    def batches(self, shard: Any, batch_size: int, keep: bool = True) -> Iterator[pa.Table]:
        """One epoch's joined batches: the first pass joins the shard's batches as the
        teacher publishes and, when another pass will follow (``keep``), keeps them in the
        object store; later passes read those back."""
        import ray

        if self._whole:
            for ref in self._joined:
                yield ray.get(ref)
            return
        self.refresh()
        self._joined.clear()
        counts = {"rows": 0, "with_signal": 0}
        for table in shard.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
            joined = self.join(table)
            counts["rows"] += joined.num_rows
            counts["with_signal"] += int((~np.isnan(joined.column(LOGIT).to_numpy(zero_copy_only=False))).sum())
            if keep:
                self._joined.append(ray.put(joined))
            yield joined
        self.counts.update(counts)
        self._whole = keep
