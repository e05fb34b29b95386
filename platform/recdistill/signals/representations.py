"""LoopFM (issue 19): the teacher's representations of users and items, written as it trains
and read back as a student's input features, each as of strictly before the row's time.

What the teacher writes (``teacher.representations``): after each signal block of its
recording pass, the rows of its embedding table for the users, shown items and history items
of the block's rows, as one ``embedding`` block (``signals.kinds``). The entity is the row of
the teacher's table (a field's code plus the field's offset), so users and items share one
key space; the time is the latest time (the log's ``ts``, or its row id) of any row the
teacher had trained on by then, over all its workers. Every architecture has that table, so
the default layer is the same for all of them. A pre-head hidden state per row is not
written: it is a row's, not an entity's, and would cost a vector per row.

What a student reads (``students.N.representations``): for a row at time t, each entity's
latest value with time < t. A value stamped t' was made by a teacher that had trained on no
row later than t', so no row reads a representation that learned from its own label or a
later one (the leakage test pins this). The joined column ``teacher_rep`` holds, per row:

    user (d) | item (d) | history mean (d) | history attention (d) | staleness (META)

with zeros where a value is missing; ``columns`` picks a student's parts. Staleness is
log1p of each value's age in the log's time (user, item), whether it exists (user, item),
and the share of the row's history items that had one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from recdistill.data.tensors import CODES, REP, fixed_size_rows, longest_list, pad_lists
from recdistill.signals.blocks import EntityBlockMeta, entity_as_of
from recdistill.signals.kinds import ENTITY_ID, TIME, signal_kind
from recdistill.signals.store import SignalStore, cached_store

KIND = "embedding"
META = 5  # age of the user's and the item's value, has user, has item, share of history items found
_SLOT = {"user": 0, "item": 1, "mean": 2, "attention": 3}


@dataclass(frozen=True)
class Layout:
    """Where a log's entities sit in the teacher's embedding table, and the log's time column."""

    dim: int  # the teacher's embedding size
    order_column: str  # ts, or row_id where the log has no time
    user_column: str | None
    user_offset: int
    item_column: str | None
    item_offset: int
    history_column: str | None  # a sequence field holding item codes
    history_length: int  # 0: each batch's longest
    levels: int = 0  # semantic-ID levels (``signals.semantic_ids``); 0: none joined

    @property
    def width(self) -> int:
        return 4 * self.dim + META


def layout(schema: Any, spec: Any, dim: int, history_length: int, levels: int = 0) -> Layout:
    """The layout of a log (its ``LogSchema``) under a teacher's ``FeatureSpec``; a ValueError
    when the log names no user or item field (nothing to key a representation by)."""
    offsets = np.concatenate([[0], np.cumsum(spec.buckets)[:-1]]).astype(np.int64)

    def field(name: str | None) -> tuple[str | None, int]:
        if name is None or name not in schema.categorical:
            return None, 0
        return name, int(offsets[schema.categorical.index(name)])

    user, u_off = field(schema.user_field)
    item, i_off = field(schema.item_field)
    if user is None and item is None:
        raise ValueError(f"teacher.representations: the log ({schema.source or 'its schema'}) names no user or item "
                         f"field among its categorical fields {list(schema.categorical)}; representations are "
                         f"keyed by them")
    history = next((s for s, src in schema.sequences if item is not None and src == item), None)
    return Layout(dim, schema.order_column, user, u_off, item, i_off, history, history_length, levels)


def columns(use: Sequence[str], history: str, dim: int) -> tuple[tuple[int, int], ...]:
    """The slices of ``teacher_rep`` a student reading ``use`` (user, item, history) takes, in
    that order, then the staleness columns; () when it reads none."""
    if not use:
        return ()
    slots = [_SLOT[history if part == "history" else part] for part in ("user", "item", "history") if part in use]
    return (*((s * dim, (s + 1) * dim) for s in slots), (4 * dim, 4 * dim + META))


def group_sizes(cols: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """Each slice's width: the student's extra input groups (``FeatureSpec.extra_dense``)."""
    return tuple(b - a for a, b in cols)


def entity_block(rows: np.ndarray, values: np.ndarray, time: int) -> pa.Table:
    """One ``embedding`` block: rows of a teacher's embedding table (the entities) and their
    values (len(rows), dim), all stamped ``time``."""
    values = np.ascontiguousarray(values, np.float32)
    return pa.table({ENTITY_ID: pa.array(rows.astype(np.int64)), TIME: pa.array(np.full(len(rows), time, np.int64)),
                     signal_kind(KIND).column: pa.FixedSizeListArray.from_arrays(values.ravel(), values.shape[1])})


def write_block(store: SignalStore, key: str, rank: int, seq: int, table: Any, rows: np.ndarray, time: int) -> None:
    """The teacher's current embedding-table rows ``rows`` (``table``: its weight tensor) as
    one ``embedding`` block stamped ``time`` (nothing when there are no rows)."""
    import torch

    rows = np.unique(rows)
    if not len(rows):
        return
    with torch.no_grad():
        values = table.detach()[torch.from_numpy(rows).to(table.device)].float().cpu().numpy()
    store.write_table(key, KIND, 0, 0, rank, seq, entity_block(rows, values, time))


def table_rows(batch: pa.Table, lay: Layout) -> np.ndarray:
    """The teacher-table rows of every entity a batch of encoded rows names (users, items,
    history items; padding left out)."""
    parts = []
    if lay.user_column:
        parts.append(batch.column(lay.user_column).to_numpy() + lay.user_offset)
    if lay.item_column:
        parts.append(batch.column(lay.item_column).to_numpy() + lay.item_offset)
    if lay.history_column:
        hist = batch.column(lay.history_column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        parts.append(hist[hist > 0] + lay.item_offset)
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def join_representations(batch: pa.Table, store_uri: str, blocks: list[dict[str, Any]],
                         lay: dict[str, Any], code_blocks: list[dict[str, Any]] | None = None) -> pa.Table:
    """Add ``teacher_rep`` to each row: its entities' latest values strictly before its time;
    with ``code_blocks``, ``teacher_codes`` too: the user's and the item's semantic IDs."""
    store = cached_store(store_uri)
    layout_ = Layout(**lay)
    out = batch.append_column(REP, representations(batch, store, [EntityBlockMeta(**b) for b in blocks], layout_))
    if code_blocks:
        out = out.append_column(CODES, semantic_ids(batch, store, [EntityBlockMeta(**b) for b in code_blocks],
                                                    layout_))
    return out


def code_columns(parts: Sequence[str], levels: int) -> tuple[tuple[int, int], ...]:
    """The slices of ``teacher_codes`` a student reading ``parts`` (user, item) takes."""
    return tuple((j * levels, (j + 1) * levels) for j, part in enumerate(("user", "item")) if part in parts)


def semantic_ids(batch: pa.Table, store: SignalStore, blocks: list[EntityBlockMeta], lay: Layout
                 ) -> pa.FixedSizeListArray:
    """Per row, the user's then the item's semantic ID (``levels`` codes each, code + 1; 0 where
    the entity had none strictly before the row's time)."""
    n, L = batch.num_rows, lay.levels
    out = np.zeros((n, 2 * L), np.int64)
    if n and blocks:
        t = batch.column(lay.order_column).to_numpy().astype(np.int64)
        for j, (col, off) in enumerate(((lay.user_column, lay.user_offset), (lay.item_column, lay.item_offset))):
            if col is None:
                continue
            table, pick, found = entity_as_of(store.fs, blocks, batch.column(col).to_numpy() + off, t - 1)
            if table.num_rows:
                codes = fixed_size_rows(table.column(signal_kind("code").column))
                out[found, j * L:(j + 1) * L] = codes[pick[found]] + 1
    return pa.FixedSizeListArray.from_arrays(pa.array(out.ravel()), 2 * L)


def representations(batch: pa.Table, store: SignalStore, blocks: list[EntityBlockMeta], lay: Layout
                    ) -> pa.FixedSizeListArray:
    n, d = batch.num_rows, lay.dim
    out = np.zeros((n, lay.width), np.float32)
    if n and blocks:
        t = batch.column(lay.order_column).to_numpy().astype(np.int64)
        ids: list[np.ndarray] = []
        if lay.user_column:
            ids.append(batch.column(lay.user_column).to_numpy() + lay.user_offset)
        if lay.item_column:
            ids.append(batch.column(lay.item_column).to_numpy() + lay.item_offset)
        hist = np.zeros((n, 0), np.int64)
        if lay.history_column:
            col = batch.column(lay.history_column)
            hist = pad_lists(col, lay.history_length or longest_list(col))
        k = hist.shape[1]
        asked = np.concatenate([*ids, (hist + lay.item_offset).ravel()]).astype(np.int64)
        at = np.concatenate([np.tile(t, len(ids)), np.repeat(t, k)]) - 1  # strictly before the row's time
        table, pick, found = entity_as_of(store.fs, blocks, asked, at)
        vt = table.column(TIME).to_numpy()[pick] if table.num_rows else np.zeros(len(asked), np.int64)
        vals = _values(table, pick, found, d)
        pos = 0
        for slot, col in ((0, lay.user_column), (1, lay.item_column)):
            if col is None:
                continue
            f = found[pos:pos + n]
            out[f, slot * d:(slot + 1) * d] = vals[pos:pos + n][f]
            out[f, 4 * d + slot] = np.log1p((t - vt[pos:pos + n])[f]).astype(np.float32)
            out[:, 4 * d + 2 + slot] = f
            pos += n
        if k:
            h = vals[pos:].reshape(n, k, d)
            m = found[pos:].reshape(n, k) & (hist > 0)
            counts = m.sum(1)
            out[:, 2 * d:3 * d] = (h * m[..., None]).sum(1) / np.maximum(counts, 1)[:, None]
            item = out[:, d:2 * d]
            score = np.where(m, np.einsum("nkd,nd->nk", h, item) / math.sqrt(d), -np.inf)
            score = np.where(counts[:, None] > 0, score - score.max(1, keepdims=True, initial=-1e30), 0.0)
            w = np.where(m, np.exp(score), 0.0)
            out[:, 3 * d:4 * d] = np.einsum("nk,nkd->nd", w / np.maximum(w.sum(1, keepdims=True), 1e-30), h)
            out[:, 4 * d + 4] = counts / k
    return pa.FixedSizeListArray.from_arrays(pa.array(out.ravel()), lay.width)


def _values(table: pa.Table, pick: np.ndarray, found: np.ndarray, d: int) -> np.ndarray:
    """The picked values as (asked, d), zeros where none was found."""
    col = table.column(signal_kind(KIND).column)
    if col.type.list_size != d:
        raise ValueError(f"the stored teacher representations have {col.type.list_size} dims, the join expected {d} "
                         f"(teacher.embed_dim)")
    out = np.zeros((len(pick), d), np.float32)
    if table.num_rows:
        out[found] = fixed_size_rows(col)[pick[found]]
    return out


def staleness_sums(batch: pa.Table) -> dict[str, float]:
    """Sums over a joined batch for the report's staleness columns (``staleness``)."""
    meta = fixed_size_rows(batch.column(REP))[:, -META:]
    out = {"rows": float(len(meta)), "history_found": float(meta[:, 4].sum())}
    for j, part in enumerate(("user", "item")):
        has = meta[:, 2 + j] > 0
        out[f"{part}_found"] = float(has.sum())
        out[f"{part}_age"] = float(np.expm1(meta[has, j].astype(np.float64)).sum())
    return out


def staleness(sums: dict[str, float]) -> dict[str, Any]:
    """Per part, the share of rows that had a value and its mean age (in the log's time:
    seconds of ``ts``, or rows where the log has no time)."""
    rows = sums.get("rows", 0.0)
    out: dict[str, Any] = {"rows": int(rows)}
    for part in ("user", "item"):
        found = sums.get(f"{part}_found", 0.0)
        out[part] = {"found": found / rows if rows else float("nan"),
                     "mean_age": sums.get(f"{part}_age", 0.0) / found if found else float("nan")}
    out["history"] = {"found": sums.get("history_found", 0.0) / rows if rows else float("nan")}
    return out
