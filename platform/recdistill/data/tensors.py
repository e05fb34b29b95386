"""Encoded rows as torch tensors, for training on one process (and on each Train worker).

``TensorLog`` holds a block of preprocessed rows: categorical codes (N, F), sequences
(N, S, L) padded with 0, dense (N, D), labels, per-row sample rates and, when the log
knows it, the true click probability; where a student stream was joined with the
teacher's representations (``signals.representations``), those too (N, R). Rows stay in
log (time) order.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import torch

from recdistill.data.schema import LABEL, P_TRUE, ROW_ID, SAMPLE_RATE, LogSchema
from recdistill.data.expert_slices import SLICE
from recdistill.data.windows import RECENCY, WINDOW


@dataclass
class TensorLog:
    cat: torch.Tensor
    dense: torch.Tensor
    seq: torch.Tensor
    label: torch.Tensor
    sample_rate: torch.Tensor
    row_id: torch.Tensor
    p_true: torch.Tensor | None = None
    window: torch.Tensor | None = None  # int32 window tag when the table has one
    recency: torch.Tensor | None = None  # int32 recency tag (windows.tag_history) when the table has one
    rep: torch.Tensor | None = None  # (N, R) float32 teacher representations when the table was joined with them
    codes: torch.Tensor | None = None  # (N, 2L) int64 semantic IDs (code + 1, 0 = none) when joined with them
    part: torch.Tensor | None = None  # int16 slice of a committee's expert (``data.expert_slices``) when tagged

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, index: torch.Tensor | slice) -> "TensorLog":
        return TensorLog(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[index])
                            for f in fields(self)})

    @staticmethod
    def concat(parts: "list[TensorLog]") -> "TensorLog":
        if len(parts) == 1:
            return parts[0]
        return TensorLog(**{f.name: (None if getattr(parts[0], f.name) is None
                                     else torch.cat([getattr(p, f.name) for p in parts]))
                            for f in fields(parts[0])})

    def with_representations(self, columns: Sequence[tuple[int, int]],
                             code_columns: Sequence[tuple[int, int]] = ()) -> "TensorLog":
        """The rows as a model that reads the teacher representations ``columns`` (slices of
        ``rep``) and semantic IDs ``code_columns`` (slices of ``codes``) sees them: those after
        its dense features and its categorical fields. None of either: unchanged."""
        out = self
        for cols, have, name, attr in ((columns, self.rep, REP, "dense"), (code_columns, self.codes, CODES, "cat")):
            if not cols:
                continue
            if have is None:
                raise ValueError(f"a model reads teacher {'representations' if attr == 'dense' else 'semantic IDs'} "
                                 f"(columns {list(cols)}), but these rows were not joined with them (no {name!r} "
                                 f"column)")
            out = replace(out, **{attr: torch.cat([getattr(out, attr), *(have[:, a:b] for a, b in cols)], 1)})
        return out

    def for_model(self, model: Any) -> "TensorLog":
        """The rows as ``model`` reads them: with the teacher representations and semantic IDs
        it takes (its ``rep_columns`` and ``code_columns``, set by ``train.plan``)."""
        return self.with_representations(getattr(model, "rep_columns", ()), getattr(model, "code_columns", ()))

    def to(self, device: torch.device | str) -> "TensorLog":
        return TensorLog(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                            for f in fields(self)})


REP = "teacher_rep"  # the column ``signals.representations`` joins: fixed_size_list<float32>[R]
COLD = "cold_user"  # the test split's column (``engine.cold``): the row's user had at most run.cold_users window rows
CODES = "teacher_codes"  # and the semantic IDs it joins: fixed_size_list<int64>[2 × levels]


def fixed_size_rows(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size list column → (N, size) numpy (slices and chunks handled by flatten)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), arr.type.list_size)


def longest_list(col: pa.ChunkedArray | pa.Array) -> int:
    """The most items in one row of a list column (at least 1: a padded width)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return max(1, int(np.max(np.diff(arr.offsets.to_numpy()), initial=0)))


def pad_lists(col: pa.ChunkedArray | pa.Array, length: int) -> np.ndarray:
    """List column → (N, length) int64, most recent items last, left-padded with 0."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = arr.offsets.to_numpy()
    offsets = offsets - offsets[0]  # a sliced array's offsets do not start at 0; flatten() does
    values = arr.flatten().to_numpy(zero_copy_only=False)
    n = len(arr)
    out = np.zeros((n, length), dtype=np.int64)
    lens = np.minimum(np.diff(offsets), length)
    if values.size:
        starts = offsets[1:] - lens  # keep the tail: the most recent items
        rows = np.repeat(np.arange(n), lens)
        j = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        out[rows, np.repeat(length - lens, lens) + j] = values[np.repeat(starts, lens) + j]
    return out


def from_table(t: pa.Table, schema: LogSchema, seq_length: int = 0) -> TensorLog:
    """One encoded Arrow table → tensors (the columns named by the schema)."""
    n = t.num_rows
    cat = np.stack([t.column(c).to_numpy() for c in schema.categorical], 1) if schema.categorical \
        else np.zeros((n, 0), np.int64)
    dense = np.stack([t.column(c).to_numpy() for c in schema.dense], 1).astype(np.float32) if schema.dense \
        else np.zeros((n, 0), np.float32)
    if schema.sequences:
        length = seq_length or max(longest_list(t.column(s)) for s, _ in schema.sequences)
        seq = np.stack([pad_lists(t.column(s), length) for s, _ in schema.sequences], 1)
    else:
        seq = np.zeros((n, 0, 1), np.int64)
    rate = t.column(SAMPLE_RATE).to_numpy().astype(np.float32) if SAMPLE_RATE in t.column_names \
        else np.ones(n, np.float32)
    p_true = torch.from_numpy(t.column(P_TRUE).to_numpy().astype(np.float32)) if P_TRUE in t.column_names else None
    return TensorLog(
        cat=torch.from_numpy(np.ascontiguousarray(cat, dtype=np.int64)),
        dense=torch.from_numpy(np.ascontiguousarray(dense)),
        seq=torch.from_numpy(np.ascontiguousarray(seq, dtype=np.int64)),
        label=torch.from_numpy(t.column(LABEL).to_numpy().astype(np.float32)),
        sample_rate=torch.from_numpy(rate),
        row_id=torch.from_numpy(t.column(ROW_ID).to_numpy().astype(np.int64)),
        p_true=p_true,
        window=torch.from_numpy(t.column(WINDOW).to_numpy().astype(np.int32)) if WINDOW in t.column_names else None,
        recency=torch.from_numpy(t.column(RECENCY).to_numpy().astype(np.int32)) if RECENCY in t.column_names
        else None,
        rep=torch.from_numpy(np.array(fixed_size_rows(t.column(REP)), np.float32))
        if REP in t.column_names else None,
        codes=torch.from_numpy(np.array(fixed_size_rows(t.column(CODES)), np.int64))
        if CODES in t.column_names else None,
        part=torch.from_numpy(t.column(SLICE).to_numpy().astype(np.int16)) if SLICE in t.column_names else None,
    )


def collect(ds: Any, schema: LogSchema, seq_length: int) -> TensorLog:
    """Gather a (small) Ray Dataset into one TensorLog, in row_id order.

    For the single-process experiment only: the distributed path streams shards to
    workers instead of gathering.
    """
    batches: Iterable[pa.Table] = ds.iter_batches(batch_format="pyarrow", batch_size=None)
    tables = [b for b in batches if b.num_rows]
    if not tables:
        raise ValueError("the split is empty: check data.splits and the log's size")
    t = pa.concat_tables(tables, promote_options="default")
    t = t.take(pa.compute.sort_indices(t, sort_keys=[(ROW_ID, "ascending")]))
    return from_table(t, schema, seq_length)
