"""The optimisation schedule a model gets by default, from the rows it trains on.

One rule for logs from 50k to 10⁸ rows, written down so that a user can predict it:

- **batch size**: the largest power of two that still gives ``STEPS_PER_PASS`` optimizer steps per
  pass, within ``[MIN_BATCH, MAX_BATCH]``. A 50k-row log gets batches of 128 (390 steps a pass)
  instead of one step per 4096 rows (12 steps: the "3 optimizer steps" a user hit); a 10⁸-row
  log gets 4096, the CrossAdapt setting.
- **epochs** (the most passes): for a student ``EPOCH_ROWS / rows`` rounded, within
  ``[1, MAX_EPOCHS]``; small logs need several passes, and from 2M rows on one pass is the
  usual CTR practice (a second pass over the same ids mostly overfits the embeddings). For the
  teacher one: the students learn from the signals of its first pass (forward distillation),
  so later passes change neither their signals nor η's teacher, and on the demo and the three
  real samples they never beat the first pass on test (best valid epoch 1 in 3 of 4; issue 14).
- **validation**: after every pass; **patience** ``PATIENCE`` when the valid split has rows.
  Not inside a pass: with one pass there is nothing to stop, and restoring the best point of a
  pass drops what the model learned after it (the latest rows, nearest the test split in time).
  Measured on the samples: a quarter-pass cadence took Avazu's teacher back to step 32 of 64
  (best on 480 valid rows) and cost it 0.036 test AUC.
- **learning rates**: Adam at 1e-2 for dense weights and 1e-3 for embedding tables at every
  batch size of the range (Adam's per-parameter scaling makes the step size nearly independent of
  the batch over 128..4096). Picked on valid AUC (issue 14): on the demo's 60k valid rows,
  against the earlier 1e-3 / 1e-2, the teacher gained 0.009 and the distilled students
  0.002–0.007, raw students equal; on the Avazu sample the teacher gained 0.017; Criteo's tied;
  iPinYou's (28 valid positives) is noise. An LR baseline preferred the same pair.

Printed at start-up and written into the run's config.yaml, so a run repeats exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_BATCH, MAX_BATCH = 128, 4096
STEPS_PER_PASS = 200
EPOCH_ROWS = 2_000_000
MAX_EPOCHS = 10
PATIENCE = 2
LR, EMBEDDING_LR = 1e-2, 1e-3


@dataclass(frozen=True)
class Schedule:
    batch_size: int
    epochs: int
    eval_every: int
    patience: int
    lr: float
    embedding_lr: float

    def steps_per_pass(self, rows: int) -> int:
        return steps_per_pass(rows, self.batch_size)


def steps_per_pass(rows: int, batch_size: int) -> int:
    return max(1, math.ceil(rows / batch_size))


def default_batch_size(rows: int) -> int:
    want = max(1, rows // STEPS_PER_PASS)
    return int(min(MAX_BATCH, max(MIN_BATCH, 1 << (want.bit_length() - 1))))


def default_epochs(rows: int) -> int:
    return int(min(MAX_EPOCHS, max(1, round(EPOCH_ROWS / max(rows, 1)))))




def default_schedule(rows: int, has_valid: bool, given: dict[str, object] | None = None,
                     teacher: bool = False) -> Schedule:
    """The schedule of a model that trains on ``rows`` rows (``has_valid``: the valid split
    has rows). ``given`` holds the keys the user set; the others are derived around them
    (a batch size or epoch count set by hand decides the validation cadence)."""
    g = given or {}
    batch = int(g.get("batch_size") or default_batch_size(rows))  # type: ignore[call-overload]
    epochs = int(g.get("epochs") or (1 if teacher else default_epochs(rows)))  # type: ignore[call-overload]
    return Schedule(batch, epochs, 0, PATIENCE if has_valid else 0, LR, EMBEDDING_LR)
