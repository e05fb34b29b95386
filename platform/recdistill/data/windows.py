"""Time-ordered splits and windows.

Rows are ordered by ``ts`` where the format has time, else by ``row_id`` (file order, then
line). Boundaries are quantiles of that column computed by distributed passes that return
only histograms or per-file counts, so nothing is gathered on the driver and the same log
always gets the same boundaries; rows are then routed by a binary search per batch.
Equal-count windows hold for any log: rows that share a timestamp (Avazu's hourly ``hour``,
a log of one day) are ordered among themselves by a fixed hash of their row id
(``order_values``), so a cut may split a tick but no split is ever empty or lopsided
because time has few distinct values.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from recdistill.data.reduce import reduce_blocks
from recdistill.data.schema import ROW_ID

WINDOW = "window"
SPLIT_NAMES = ("train", "valid", "test")


def cut_points(fractions: Sequence[float]) -> list[float]:
    """Interior cumulative cut points of fractions summing to 1: [0.8, 0.1, 0.1] → [0.8, 0.9]."""
    return [float(x) for x in np.cumsum(fractions)[:-1]]


_BINS = 4096
_TIE_SEED = 0x5EED  # fixed: the splits must not move with data.seed or run.seed


def order_values(batch: pa.Table, column: str) -> np.ndarray:
    """The value rows are cut by: ``row_id`` as is; time plus a uniform in [0, 1) hashed from
    the row id. Timestamps are whole seconds (or hours), so the jitter never reorders two
    different ticks, and rows of one tick (which time cannot order) are split at random
    instead of all falling on one side of a cut: a log whose rows share a few hours (or
    one) still gets its train/valid/test shares."""
    x = batch.column(column).to_numpy().astype(np.float64)
    if column == ROW_ID:
        return x
    from recdistill.data.sampling import row_uniform

    return x + row_uniform(batch.column(ROW_ID).to_numpy(), _TIE_SEED)


# ``memo(what, compute)``: the cuts ``what`` names (which rows, column, quantiles), from an
# earlier run of the same log or ``compute()``d and kept (``engine.cut_memo``). Cuts are
# exact and deterministic, so a kept cut equals a recomputed one; it saves the passes.
CutMemo = Callable[[dict[str, Any], Callable[[], list[float]]], list[float]]


def boundaries(ds: Any, column: str, quantiles: Sequence[float], memo: CutMemo | None = None,
               rows: str = "log") -> list[float]:
    """Deterministic quantiles of ``column`` over a Ray Dataset, with no sort and no gather.

    Time (``ts``): two histogram passes of 4096 bins, the second refining only the bins
    that hold a cut, so a cut is exact to 1/16.7M of the time span and identical on every
    run (a randomised sketch would move the test split between runs). Row order
    (``row_id`` = file index << 40 | line): the last line of each file, from one pass,
    places each cut on an exact line.
    """
    if not quantiles:
        return []
    if memo is not None:
        return memo({"rows": rows, "column": column, "quantiles": [float(q) for q in quantiles]},
                    lambda: boundaries(ds, column, quantiles))
    if column == ROW_ID:
        return _row_order_cuts(ds, quantiles)
    stats = reduce_blocks(ds, _min_max_count, _combine_min_max_count, {"column": column})
    if stats is None or stats[2] == 0:
        raise ValueError(f"cannot cut an empty log into windows (column {column!r})")
    lo, hi, n = stats
    if hi <= lo:
        return [hi] * len(quantiles)
    edges = np.linspace(lo, np.nextafter(hi, np.inf), _BINS + 1)
    coarse = _histograms(ds, column, [edges])[0]
    cum = np.cumsum(coarse)
    targets = [q * n for q in quantiles]
    bins = [int(np.searchsorted(cum, t, side="left")) for t in targets]
    fine_edges = [np.linspace(edges[b], edges[b + 1], _BINS + 1) for b in bins]
    fine = _histograms(ds, column, fine_edges)
    cuts = []
    for t, b, fe, h in zip(targets, bins, fine_edges, fine):
        before = cum[b - 1] if b > 0 else 0
        j = int(np.searchsorted(before + np.cumsum(h), t, side="left"))
        cuts.append(float(fe[min(j + 1, _BINS)]))
    return cuts


def _min_max_count(batch: pa.Table, column: str) -> tuple[float, float, int]:
    x = order_values(batch, column)
    if x.size == 0:
        return np.inf, -np.inf, 0
    return float(x.min()), float(x.max()), int(x.size)


def _combine_min_max_count(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float, int]:
    return min(a[0], b[0]), max(a[1], b[1]), a[2] + b[2]


def _histogram_batch(batch: pa.Table, column: str, edges: list[np.ndarray]) -> np.ndarray:
    x = order_values(batch, column)
    return np.concatenate([np.histogram(x, bins=e)[0].astype(np.int64) for e in edges])


def _histograms(ds: Any, column: str, edges: list[np.ndarray]) -> list[np.ndarray]:
    """Histograms of ``column`` for several bin sets in one pass."""
    total = reduce_blocks(ds, _histogram_batch, np.add, {"column": column, "edges": edges})
    return np.split(total, np.cumsum([len(e) - 1 for e in edges])[:-1])


def _last_line_per_file(batch: pa.Table) -> dict[int, int]:
    rid = batch.column(ROW_ID).to_numpy()
    files, lines = rid >> 40, rid & ((1 << 40) - 1)
    return {int(f): int(lines[files == f].max()) for f in np.unique(files)}


def _merge_max(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in a.keys() | b.keys()}


def _row_order_cuts(ds: Any, quantiles: Sequence[float]) -> list[float]:
    last = reduce_blocks(ds, _last_line_per_file, _merge_max)
    if not last:
        raise ValueError("cannot cut an empty log into windows")
    files = np.array(sorted(last), dtype=np.int64)
    lines = np.array([last[f] for f in files], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lines)])
    cuts = []
    for q in quantiles:
        pos = q * offsets[-1]
        k = min(int(np.searchsorted(offsets, pos, side="right")) - 1, len(files) - 1)
        # The cut is the first row of the next part: ``pos`` rows come before it.
        line = int(np.floor(pos - offsets[k])) + 1
        cuts.append(float((int(files[k]) << 40) | line))
    return cuts


def assign(values: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """Index of the interval each value falls in: (-inf, b0), [b0, b1), ..., [b_last, inf)."""
    return np.searchsorted(np.asarray(bounds, dtype=np.float64), values.astype(np.float64),
                           side="right").astype(np.int32)


def _select(batch: pa.Table, column: str, bounds: list[float], index: int) -> pa.Table:
    which = assign(order_values(batch, column), bounds)
    return batch.filter(pa.array(which == index))


def _tag(batch: pa.Table, column: str, bounds: list[float]) -> pa.Table:
    return batch.append_column(WINDOW, pa.array(assign(order_values(batch, column), bounds)))


def time_splits(ds: Any, column: str, fractions: Sequence[float], memo: CutMemo | None = None) -> dict[str, Any]:
    """Train/valid/test Ray Datasets, time-ordered by ``column`` (lazy; nothing materialised)."""
    bounds = boundaries(ds, column, cut_points(fractions), memo)
    return {name: ds.map_batches(_select, batch_format="pyarrow",
                                 fn_kwargs={"column": column, "bounds": bounds, "index": i})
            for i, name in enumerate(SPLIT_NAMES)}


def two_way_split(ds: Any, column: str, first_fraction: float, memo: CutMemo | None = None) -> tuple[Any, Any]:
    """The earliest ``first_fraction`` of rows and the rest (lazy), cut as ``time_splits`` cuts."""
    bounds = boundaries(ds, column, [first_fraction], memo, rows="data.path")
    return tuple(ds.map_batches(_select, batch_format="pyarrow",  # type: ignore[return-value]
                                fn_kwargs={"column": column, "bounds": bounds, "index": i}) for i in (0, 1))


def with_windows(ds: Any, column: str, num_windows: int) -> tuple[Any, list[float]]:
    """Add an int32 ``window`` column: equal-count time windows 0..num_windows-1."""
    bounds = boundaries(ds, column, [i / num_windows for i in range(1, num_windows)])
    tagged = ds.map_batches(_tag, batch_format="pyarrow", fn_kwargs={"column": column, "bounds": bounds})
    return tagged, bounds


HISTORY, STUDENT_WINDOW = 0, 1
RECENCY = "recency"


def _tag_train(batch: pa.Table, column: str, history: list[float], recent: list[float]) -> pa.Table:
    order = order_values(batch, column)
    return (batch.append_column(WINDOW, pa.array(assign(order, history)))
            .append_column(RECENCY, pa.array(assign(order, recent))))


def tag_history(train: Any, column: str, history_fraction: float,
                recent_cuts: Sequence[float] = (), memo: CutMemo | None = None,
                cut_on: Any = None) -> tuple[Any, float | None]:
    """Tag the train split's rows: ``window`` 0 = the teacher-only history (the earliest
    ``history_fraction`` of rows in time), 1 = the students' window; ``recency`` k = the row
    lies past the k-th of ``recent_cuts`` (shares of the train split in ascending order, see
    ``train.plan.recent_cuts``: a student with ``rows: recent`` takes the rows past its cut).
    One deterministic pass for all cuts, shared by every engine, so they train on the same rows.
    ``cut_on``: the same rows before encoding, where the pass reads two columns without
    encoding every row first (the cuts are the same: encoding keeps ``column`` and row ids).
"""
    head = [history_fraction] if history_fraction > 0 else []
    cuts = boundaries(train if cut_on is None else cut_on, column, head + list(recent_cuts), memo, rows="train split")
    history, recent = cuts[:len(head)], cuts[len(head):]
    tagged = train.map_batches(_tag_train, batch_format="pyarrow",
                               fn_kwargs={"column": column, "history": history, "recent": recent})
    return tagged, (history[0] if history else None)


# ------------------------------------------------------------------ data.shuffle

SHUFFLES = ("none", "window", "global")
_ID_BITS = 62
_M62 = np.uint64((1 << _ID_BITS) - 1)
_MIN_ID = np.int64(np.iinfo(np.int64).min)


def resolve_shuffle(mode: str, has_ts: bool) -> str:
    """``auto`` → ``none`` for a log with a time column (its order means something),
    ``window`` for one without (file order is often sorted by label, user or source)."""
    if mode == "auto":
        return "none" if has_ts else "window"
    if mode not in SHUFFLES:
        raise ValueError(f"data.shuffle={mode!r}: expected auto or one of {', '.join(SHUFFLES)}")
    return mode


def permuted_ids(row_ids: np.ndarray, window: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """New row ids whose ascending order is the shuffled training order.

    A seeded bijection of the 62-bit id space (xor, odd multiplies and xorshifts mod 2^62),
    so no two rows ever share an id, unlike a hash, whose collisions would merge two rows in
    the signal join. Shifted into the negative int64 range, where no reader id (file << 40 |
    line ≥ 0) lies, so they never meet a valid or test id. ``window`` mode puts the window
    above the permuted bits: history rows first, then the students' window.
    """
    ids = np.asarray(row_ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > int(_M62)):
        raise ValueError(f"row_id {int(ids.min()) if ids.min() < 0 else int(ids.max())} is outside [0, 2^62): "
                         f"data.shuffle permutes reader ids only (file index < 2^22)")
    x = ids.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & int(_M62))
    for mul, shift in ((0xBF58476D1CE4E5B9, 29), (0x94D049BB133111EB, 32), (0xD6E8FEB86659FD93, 29)):
        x = (x * np.uint64(mul)) & _M62  # odd multiplier: a bijection mod 2^62 (uint64 wraps mod 2^64)
        x = x ^ (x >> np.uint64(shift))
    high = (np.asarray(window, dtype=np.int64) << _ID_BITS) if mode == "window" else np.int64(0)
    return _MIN_ID + high + x.astype(np.int64)


def _permute_batch(batch: pa.Table, mode: str, seed: int) -> pa.Table:
    new = permuted_ids(batch.column(ROW_ID).to_numpy(), batch.column(WINDOW).to_numpy(), mode, seed)
    return batch.set_column(batch.schema.get_field_index(ROW_ID), ROW_ID, pa.array(new, pa.int64()))


def shuffled_train(train: Any, column: str, history_fraction: float, mode: str, seed: int,
                   recent_cuts: Sequence[float] = (), memo: CutMemo | None = None, cut_on: Any = None) -> Any:
    """The train split tagged with its windows (cut in log order, as ``tag_history`` does),
    then in ``mode``'s seeded order: row ids permuted and sorted, materialised.

    The order lives in the row ids, so every consumer that reads rows by ascending row id
    (the local engine's ``collect``, Ray Train's ordered shards, the signal join's ranges)
    sees the same order; the history/window cut is taken before the ids change.
    """
    tagged, _ = tag_history(train, column, history_fraction, recent_cuts, memo, cut_on)
    permuted = tagged.map_batches(_permute_batch, batch_format="pyarrow", fn_kwargs={"mode": mode, "seed": seed})
    return permuted.sort(ROW_ID).materialize()

