"""Unclicked-sample augmentation: made-up (user, item) pairs the student learns from the
teacher's soft labels alone (CrossAdapt; its details are not public, this is our design).

An augmented row is a real row (its user, context and history) with the item side
swapped in from a donor row of the same batch. Donors are picked per batch, as a stream
would see them, so the step scales as a ``map_batches`` on a cluster with nothing global:

- ``popularity``: any other impression of the batch (popular items come up as often as
  they are shown);
- ``random``: a distinct item of the batch, uniformly (the long tail as often as the head);
- ``session``: another impression of the same user in the batch (items the user was shown
  near that time, e.g. in the same session); a user with one impression falls back to
  ``popularity``.

A donor with the row's own item is drawn again (a few times); pairs still on their own
item are dropped (they were shown). A pair is
not checked against the whole log: across a batch of a few thousand rows, the chance
that a made-up pair was also a real impression is small, and it would only get the
teacher's soft label, which is what the student learns from it anyway.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recdistill.data.sampling import row_uniform
from recdistill.data.schema import LABEL, P_TRUE, ROW_ID
from recdistill.signals.kinds import LOGIT

AUGMENTED = "augmented"  # int8: 1 = made-up pair (no label), 0 = a real impression
GENERATORS = ("random", "popularity", "session")
_REDRAWS = 4


def default_item_columns(schema: Any, synthetic: Any | None) -> list[str]:
    """The item side of a row: the item field, and for the synthetic log the item-side
    attribute fields and the dense counts (which its click model draws from the item)."""
    if schema.item_field is None:
        raise ValueError("transfer.augment: the log's schema names no item field; set "
                         "transfer.augment.item_columns to the columns that describe the item")
    cols = [schema.item_field]
    if synthetic is not None and schema.source == "synthetic":
        first = synthetic.user_side_fields
        cols = [f"C{i + 1}" for i in range(first, first + synthetic.item_side_fields)] + cols + list(schema.dense)
    return cols


def _donors(items: np.ndarray, users: np.ndarray | None, base: np.ndarray, generator: str,
            rng: np.random.Generator) -> np.ndarray:
    n = len(items)
    if generator == "random":
        _, first = np.unique(items, return_index=True)
        return first[rng.integers(0, len(first), len(base))]
    donors = rng.integers(0, n, len(base))
    if generator == "session":
        order = np.argsort(users, kind="stable")
        sorted_users = users[order]
        lo = np.searchsorted(sorted_users, users[base], "left")
        hi = np.searchsorted(sorted_users, users[base], "right")
        size = hi - lo
        pick = lo + np.floor(rng.random(len(base)) * size).astype(np.int64)
        own = order[pick]
        # a user with one impression has no session donor: keep the popularity draw
        donors = np.where(size > 1, own, donors)
    return donors


def augment_batch(batch: pa.Table, ratio: float, generator: str, item_columns: list[str],
                  user_column: str | None, seed: int) -> pa.Table:
    """The batch's rows (``augmented`` = 0) and about ``ratio`` made-up rows per real row
    (``augmented`` = 1, label 0 and masked, teacher logit NaN until scored), each next to
    the row it was made from (sorted by row id)."""
    if generator not in GENERATORS:
        raise ValueError(f"transfer.augment.generator={generator!r}: expected one of {', '.join(GENERATORS)}")
    missing = [c for c in item_columns if c not in batch.column_names]
    if missing:
        raise ValueError(f"transfer.augment.item_columns: {missing} not in the log's columns "
                         f"{batch.column_names}")
    if generator == "session" and (user_column is None or user_column not in batch.column_names):
        raise ValueError("transfer.augment.generator=session needs the schema's user field in the log")
    n = batch.num_rows
    real = batch.append_column(AUGMENTED, pa.array(np.zeros(n, np.int8)))
    if n < 2 or ratio <= 0:
        return real
    ids = batch.column(ROW_ID).to_numpy()
    # How many pairs each row makes: floor(ratio), plus one with probability frac(ratio),
    # a coin per row id, so the counts do not depend on how the log is split into batches.
    whole, frac = math.floor(ratio), ratio - math.floor(ratio)
    counts = whole + (row_uniform(ids, seed) < frac).astype(np.int64)
    base = np.repeat(np.arange(n), counts)
    if not len(base):
        return real
    rng = np.random.default_rng([seed & 0xFFFFFFFF, int(ids[0]) & 0xFFFFFFFF, n])
    items = batch.column(item_columns[0]).to_numpy(zero_copy_only=False)
    users = batch.column(user_column).to_numpy(zero_copy_only=False) if user_column else None
    donors = _donors(items, users, base, generator, rng)
    shown = items[donors] == items[base]
    for _ in range(_REDRAWS):  # a popular head often draws the row's own item: draw again
        if not shown.any():
            break
        donors[shown] = _donors(items, users, base[shown], generator, rng)
        shown = items[donors] == items[base]
    base, donors = base[~shown], donors[~shown]
    if not len(base):
        return real
    made = real.take(pa.array(base))
    for c in item_columns:
        made = made.set_column(made.schema.get_field_index(c), c, batch.column(c).take(pa.array(donors)))
    k = len(base)
    made = made.set_column(made.schema.get_field_index(AUGMENTED), AUGMENTED, pa.array(np.ones(k, np.int8)))
    made = made.set_column(made.schema.get_field_index(LABEL), LABEL,
                           pa.array(np.zeros(k), type=batch.schema.field(LABEL).type))
    for c in (LOGIT, P_TRUE):
        if c in made.column_names:
            made = made.set_column(made.schema.get_field_index(c), c,
                                   pa.array(np.full(k, np.nan), type=made.schema.field(c).type))
    out = pa.concat_tables([real, made])
    return out.take(pc.sort_indices(out, sort_keys=[(ROW_ID, "ascending"), (AUGMENTED, "ascending")]))


class TeacherScorer:
    """A ``map_batches`` class: the teacher's logit for the augmented rows of each batch
    (real rows keep their forward-distillation logit). Loaded once per actor."""

    def __init__(self, checkpoint: str, teacher: dict[str, Any], schema: Any, buckets: dict[str, int],
                 seq_len: int) -> None:
        from recdistill.config import config_from_dict
        from recdistill.train.plan import build_model, feature_spec

        t = config_from_dict({"teacher": teacher}).teacher
        self.model = build_model(feature_spec(schema, buckets), t, "single", 0, sparse_embeddings=False)
        self.model.load_state_dict(load_teacher_state(checkpoint))
        self.model.eval()
        self.schema, self.seq_len = schema, seq_len

    @torch.no_grad()
    def __call__(self, batch: pa.Table) -> pa.Table:
        from recdistill.data.tensors import from_table

        flag = batch.column(AUGMENTED).to_numpy(zero_copy_only=False) == 1
        if not flag.any():
            return batch
        rows = batch.filter(pa.array(flag))
        b = from_table(rows, self.schema, self.seq_len)
        z = batch.column(LOGIT).to_numpy(zero_copy_only=False).astype(np.float32).copy()
        z[flag] = self.model(b.cat, b.dense, b.seq)[0].float().numpy()
        return batch.set_column(batch.schema.get_field_index(LOGIT), LOGIT, pa.array(z, pa.float32()))


def teacher_state_path(checkpoint: str) -> str:
    """The teacher's ``state.pt`` in a Ray Train checkpoint directory (or the file itself);
    a clear error when it is gone."""
    import os

    from recdistill.train.checkpoint import STATE_FILE

    path = os.path.join(checkpoint, STATE_FILE) if os.path.isdir(checkpoint) else checkpoint
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"teacher checkpoint {path} is gone (its run directory was removed?): the transfer stage needs the "
            f"old model's weights; set platform.reuse_signals=false to retrain the teacher")
    return path


def load_teacher_state(checkpoint: str) -> dict[str, torch.Tensor]:
    """The teacher's weights from a Ray Train checkpoint directory (or its ``state.pt``).
    The path comes from the signal store's ``teacher.json``: the file is loaded as data only."""
    from recdistill.train.checkpoint import load_state

    path = teacher_state_path(checkpoint)
    state = load_state(path)
    if "model" not in state:
        raise KeyError(f"teacher checkpoint {path}: no 'model' entry (keys {sorted(state)}); expected the teacher "
                       f"run's model checkpoint")
    return state["model"]
