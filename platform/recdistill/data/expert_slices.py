"""The domain experts' slices of the teacher-only history (``committee.slice_by``).

Each history row is tagged with the expert that trains on it (``SLICE``), in Ray Data
read tasks, from what the row itself holds, so a row falls in the same slice on every
run and block layout:
- hash: a row-id hash (a seed of its own, apart from cross-fitting's folds);
- time: K equal-count spans of the history by time (row order for logs without time), cut
  by ``windows.boundaries`` (exact, no sort, no gather);
- field:NAME: the field's commonest codes (up to ``TOP_VALUES``, counted in the read tasks
  and added on the driver, ``data.reduce``) packed into K groups of about equal rows,
  largest first into the lightest group; every other code by its hash.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from recdistill.data.reduce import Sparse, add_sparse, reduce_blocks
from recdistill.data.sampling import hash_part
from recdistill.data.schema import ROW_ID
from recdistill.data.windows import HISTORY, WINDOW, assign, boundaries, order_values

SLICE = "expert_slice"  # int16 column: the expert a history row trains
TOP_VALUES = 4096  # the most codes of a slicing field packed by count; the rest go by hash
_SLICE_SEED = 0xE4BE27  # fixed: the slices must not move with run.seed (its seeds share the experts)


def history_rows(batch: pa.Table) -> pa.Table:
    """The teacher-only history rows of a tagged train batch."""
    keep = batch.column(WINDOW).to_numpy() == HISTORY
    return batch if keep.all() else batch.filter(pa.array(keep))


def by_hash(values: np.ndarray, experts: int) -> np.ndarray:
    return hash_part(values, experts, _SLICE_SEED)


def tag_slices(batch: pa.Table, rule: dict[str, Any]) -> pa.Table:
    """The batch with its rows' slice (``rule`` from ``slice_rule``)."""
    k, kind = rule["experts"], rule["kind"]
    if kind == "hash":
        part = by_hash(batch.column(ROW_ID).to_numpy(), k)
    elif kind == "time":
        part = assign(order_values(batch, rule["column"]), rule["bounds"])
    else:
        codes = batch.column(rule["column"]).to_numpy(zero_copy_only=False).astype(np.int64)
        part = by_hash(codes, k)
        known = np.asarray(rule["codes"], dtype=np.int64)
        if known.size:
            at = np.searchsorted(known, codes).clip(0, known.size - 1)
            hit = known[at] == codes
            part[hit] = np.asarray(rule["groups"], dtype=np.int64)[at[hit]]
    return batch.append_column(SLICE, pa.array(part.astype(np.int16)))


def slice_rule(history: Any, kind: str, field: str | None, experts: int, order_column: str,
               categorical: tuple[str, ...]) -> dict[str, Any]:
    """What ``tag_slices`` needs, measured on the history dataset where it must be."""
    rule: dict[str, Any] = {"kind": kind, "experts": experts}
    if kind == "time":
        rule.update(column=order_column,
                    bounds=boundaries(history, order_column, [j / experts for j in range(1, experts)]))
    elif kind == "field":
        if field not in categorical:
            raise ValueError(f"committee.slice_by=field:{field}: the log has no categorical field {field!r}; its "
                             f"fields: {', '.join(categorical)}")
        codes, counts = top_codes(history, field)
        groups = pack(counts, experts)
        order = np.argsort(codes)
        rule.update(column=field, codes=codes[order].tolist(), groups=groups[order].tolist(),
                    packed_rows=np.bincount(groups, weights=counts, minlength=experts).astype(int).tolist(),
                    packed_values=int(codes.size))
    return rule


def _value_counts(batch: pa.Table, column: str) -> Sparse:
    codes, counts = np.unique(batch.column(column).to_numpy(zero_copy_only=False).astype(np.int64),
                              return_counts=True)
    return _head((codes, counts.astype(np.int64)))


def _head(counts: Sparse, keep: int = 4 * TOP_VALUES) -> Sparse:
    """The ``keep`` commonest codes: a block's (or a partial sum's) long tail cannot reach the top."""
    codes, n = counts
    if codes.size <= keep:
        return codes, n
    top = np.sort(np.argpartition(-n, keep)[:keep])
    return codes[top], n[top]


def top_codes(history: Any, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The commonest codes of ``column`` over the history and their row counts, commonest
    first (at most ``TOP_VALUES``): each read task counts its block's codes and keeps its
    head, the driver adds the heads as they stream in (``data.reduce``: one pass, no
    shuffle). A code common overall but in no block's head is undercounted, and then packed
    by hash like the rest."""
    got = reduce_blocks(history.select_columns([column]), _value_counts,
                        lambda a, b: _head(add_sparse(a, b)), {"column": column})
    if got is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes, counts = got
    order = np.argsort(-counts, kind="stable")[:TOP_VALUES]
    return codes[order], counts[order]


def pack(counts: np.ndarray, groups: int) -> np.ndarray:
    """The group of each count: largest first into the group with the fewest rows so far."""
    load = np.zeros(groups, dtype=np.int64)
    out = np.zeros(counts.size, dtype=np.int64)
    for i in np.argsort(-counts, kind="stable"):
        g = int(load.argmin())
        out[i] = g
        load[g] += counts[i]
    return out
