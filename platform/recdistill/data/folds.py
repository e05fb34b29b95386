"""Cross-fitting folds of the students' window (``teacher.signals: crossfit:K``).

A row's fold is a hash of its row id, so a row falls in the same fold whatever the block
layout and in every run; folds are about equal in size. Teacher ``k`` trains on every row
of the history and on the window's rows outside fold ``k``, and scores fold ``k``, so each
window row's signal comes from a teacher that never trained on it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recdistill.data.sampling import hash_part
from recdistill.data.schema import ROW_ID
from recdistill.data.windows import STUDENT_WINDOW, WINDOW

_FOLD_SEED = 0xF01D5  # fixed: folds must not move with run.seed (a sweep's seeds share them)


def fold_of(row_ids: np.ndarray, folds: int) -> np.ndarray:
    """The fold in [0, folds) of each row id."""
    return hash_part(row_ids, folds, _FOLD_SEED)


def held_out(batch: pa.Table) -> np.ndarray:
    return batch.column(WINDOW).to_numpy() == STUDENT_WINDOW


def fold_train_rows(batch: pa.Table, fold: int, folds: int) -> pa.Table:
    """What teacher ``fold`` trains on: the history, and the window outside its fold."""
    keep = ~held_out(batch) | (fold_of(batch.column(ROW_ID).to_numpy(), folds) != fold)
    return batch if keep.all() else batch.filter(pa.array(keep))


def fold_score_rows(batch: pa.Table, fold: int, folds: int) -> pa.Table:
    """What teacher ``fold`` gives signals for: the window's rows of its fold."""
    keep = held_out(batch) & (fold_of(batch.column(ROW_ID).to_numpy(), folds) == fold)
    return batch.filter(pa.array(keep))
