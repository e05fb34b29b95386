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

from dataclasses import dataclass, field
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
    return _boundaries(ds, column, quantiles, memo, rows)[0]


@dataclass
class _Measured:
    """What a time cut's passes measured: the span its edges divide, the rows' coarse
    histogram over those edges and the fine histograms of the coarse bins it refined."""

    lo: float
    hi: float
    coarse: np.ndarray
    fine: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class Below:
    """A split that is the rows of ``parent`` ordered before ``cut`` (the first part of
    ``time_splits`` and ``two_way_split``), with what that cut's passes measured (None when
    the cut came from the memo). ``tag_history`` cuts the split on its parent's edges, so
    the measured histograms leave one pass of three to do."""

    parent: Any
    cut: float
    measured: _Measured | dict[int, int] | None = None  # time: histograms; row order: each file's last line


def _boundaries(ds: Any, column: str, quantiles: Sequence[float], memo: CutMemo | None,
                rows: str) -> tuple[list[float], _Measured | dict[int, int] | None]:
    """``boundaries`` and what its passes measured (time: histograms; row order: each file's
    last line; None: the memo or no cut)."""
    if not quantiles:
        return [], None
    if memo is not None:
        measured: list[_Measured | dict[int, int] | None] = [None]

        def compute() -> list[float]:
            cuts, measured[0] = _boundaries(ds, column, quantiles, None, rows)
            return cuts

        cuts = memo(_memo_key(rows, column, quantiles), compute)
        return cuts, measured[0]
    if column == ROW_ID:
        last = _last_lines(ds)
        return _row_order_cuts(last, quantiles), last
    lo, hi = _span(ds, column)
    if hi <= lo:
        return [hi] * len(quantiles), None
    m = _Measured(lo, hi, _histograms(ds, column, [_edges(lo, hi)])[0])
    return _refined_cuts(ds, column, quantiles, m), m


def _memo_key(rows: str, column: str, quantiles: Sequence[float]) -> dict[str, Any]:
    return {"rows": rows, "column": column, "quantiles": [float(q) for q in quantiles]}


def _span(ds: Any, column: str) -> tuple[float, float]:
    """The lowest and highest order value of ``column`` (one pass); an empty log fails."""
    stats = reduce_blocks(ds, _min_max_count, _combine_min_max_count, {"column": column})
    if stats is None or stats[2] == 0:
        raise ValueError(f"cannot cut an empty log into windows (column {column!r})")
    return stats[0], stats[1]


def _edges(lo: float, hi: float) -> np.ndarray:
    return np.linspace(lo, np.nextafter(hi, np.inf), _BINS + 1)


def _fine_edges(m: _Measured, b: int) -> np.ndarray:
    edges = _edges(m.lo, m.hi)
    return np.linspace(edges[b], edges[b + 1], _BINS + 1)


def _refined_cuts(ds: Any, column: str, quantiles: Sequence[float], m: _Measured) -> list[float]:
    """The cuts at ``quantiles`` of the rows ``m.coarse`` counts: the bins that hold them
    refined (one pass over ``ds`` for those ``m.fine`` lacks; it gains them)."""
    cum = np.cumsum(m.coarse)
    targets = [q * cum[-1] for q in quantiles]
    bins = [int(np.searchsorted(cum, t, side="left")) for t in targets]
    missing = sorted(set(bins) - m.fine.keys())
    if missing:
        m.fine.update(zip(missing, _histograms(ds, column, [_fine_edges(m, b) for b in missing])))
    cuts = []
    for t, b in zip(targets, bins):
        before = cum[b - 1] if b > 0 else 0
        j = int(np.searchsorted(before + np.cumsum(m.fine[b]), t, side="left"))
        cuts.append(float(_fine_edges(m, b)[min(j + 1, _BINS)]))
    return cuts


def _below_cuts(rows: Any, column: str, quantiles: Sequence[float], below: Below) -> list[float]:
    """Quantiles of ``rows`` (``below.parent``'s rows before ``below.cut``) on the parent's
    edges. With the cut's histograms the rows' coarse histogram is theirs up to the cut's
    bin (and its fine one up to the cut), so only the bins of the new cuts need a pass;
    without them (a memo hit) a min/max pass over the parent and a coarse pass come first.
    Either way the same histograms, hence the same cuts."""
    m = below.measured
    if isinstance(m, dict):
        raise TypeError("a row-order cut is refined by _below_line_cuts")
    if m is None:
        lo, hi = _span(below.parent, column)
        if hi <= lo:
            return [hi] * len(quantiles)
        coarse = _histograms(rows, column, [_edges(lo, hi)])[0]
        own = _Measured(lo, hi, coarse)
    else:
        b = int(np.searchsorted(_edges(m.lo, m.hi), below.cut, side="right")) - 1
        coarse = m.coarse.copy()
        if b in m.fine:
            k = int(np.searchsorted(_fine_edges(m, b), below.cut, side="left"))
            fine = m.fine[b].copy()
            fine[k:] = 0  # fine bin k starts at the cut: its rows are past it
            coarse[b], coarse[b + 1:] = fine.sum(), 0
            own = _Measured(m.lo, m.hi, coarse, {b: fine})
        else:  # the cut is the right edge of the bin it refined: all of that bin is before it
            coarse[b:] = 0
            own = _Measured(m.lo, m.hi, coarse)
    if own.coarse.sum() == 0:
        raise ValueError(f"cannot cut an empty log into windows (column {column!r})")
    return _refined_cuts(rows, column, quantiles, own)


def _below_line_cuts(quantiles: Sequence[float], below: Below) -> list[float]:
    """Row order: quantiles of the line positions before ``below.cut`` (every file before the
    cut's file, and its lines before the cut), from the parent's last lines: the split cut's
    own pass, or one pass over the parent after a memo hit. Positions, as the split cut counts
    them, so a row missing just before the cut (rejected, down-sampled) moves no cut."""
    last = below.measured if isinstance(below.measured, dict) else _last_lines(below.parent)
    cut = int(below.cut)
    file, line = cut >> 40, cut & ((1 << 40) - 1)
    before = {f: n for f, n in last.items() if f < file}
    if line > 1:
        before[file] = line - 1
    return _row_order_cuts(before, quantiles)


def _min_max_count(batch: pa.Table, column: str) -> tuple[float, float, int]:
    x = order_values(batch, column)
    if x.size == 0:
        return np.inf, -np.inf, 0
    return float(x.min()), float(x.max()), int(x.size)


def _combine_min_max_count(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float, int]:
    return min(a[0], b[0]), max(a[1], b[1]), a[2] + b[2]


def _histogram_batch(batch: pa.Table, column: str, edges: list[np.ndarray]) -> np.ndarray:
    x = order_values(batch, column)
    return np.concatenate([_half_open_histogram(x, e) for e in edges])


def _half_open_histogram(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``x`` in [e0, e1), [e1, e2), ...: unlike ``np.histogram`` the last bin is
    open too, so a fine histogram of a coarse bin never counts the next bin's first value."""
    i = np.searchsorted(edges, x, side="right") - 1
    i = i[(i >= 0) & (i < len(edges) - 1)]
    return np.bincount(i, minlength=len(edges) - 1).astype(np.int64)


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


def _last_lines(ds: Any) -> dict[int, int]:
    """Each file's last line (row order's one pass)."""
    return reduce_blocks(ds, _last_line_per_file, _merge_max) or {}


def _row_order_cuts(last: dict[int, int], quantiles: Sequence[float]) -> list[float]:
    """Cuts at ``quantiles`` of the line positions of files whose last lines are ``last``."""
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
    return time_splits_below(ds, column, fractions, memo)[0]


def time_splits_below(ds: Any, column: str, fractions: Sequence[float], memo: CutMemo | None = None
                      ) -> tuple[dict[str, Any], Below]:
    """``time_splits`` and where its train split lies in ``ds`` (for ``tag_history``)."""
    parts, below = _cut_parts(ds, column, cut_points(fractions), memo, "log")
    return dict(zip(SPLIT_NAMES, parts)), below


def two_way_split(ds: Any, column: str, first_fraction: float, memo: CutMemo | None = None
                  ) -> tuple[tuple[Any, Any], Below]:
    """The earliest ``first_fraction`` of rows and the rest (lazy), cut as ``time_splits``
    cuts, and where the first part lies in ``ds`` (for ``tag_history``)."""
    parts, below = _cut_parts(ds, column, [first_fraction], memo, "data.path")
    return (parts[0], parts[1]), below


def _cut_parts(ds: Any, column: str, quantiles: Sequence[float], memo: CutMemo | None, rows: str
               ) -> tuple[list[Any], Below]:
    """``ds`` cut at ``quantiles`` of ``column`` into its parts in order (lazy), and where the
    first lies in ``ds``."""
    bounds, measured = _boundaries(ds, column, quantiles, memo, rows)
    parts = [ds.map_batches(_select, batch_format="pyarrow", fn_kwargs={"column": column, "bounds": bounds, "index": i})
             for i in range(len(bounds) + 1)]
    return parts, Below(ds, bounds[0], measured)


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
                cut_on: Any = None, below: Below | None = None) -> tuple[Any, float | None]:
    """Tag the train split's rows: ``window`` 0 = the teacher-only history (the earliest
    ``history_fraction`` of rows in time), 1 = the students' window; ``recency`` k = the row
    lies past the k-th of ``recent_cuts`` (shares of the train split in ascending order, see
    ``train.plan.recent_cuts``: a student with ``rows: recent`` takes the rows past its cut).
    One deterministic pass for all cuts, shared by every engine, so they train on the same rows.
    ``cut_on``: the same rows before encoding, where the pass reads two columns without
    encoding every row first (the cuts are the same: encoding keeps ``column`` and row ids).
    ``below``: the train split is its log's rows before a cut (``time_splits_below``); its
    time cuts are then taken on the log's edges, from the split cut's histograms.
    """
    head = [history_fraction] if history_fraction > 0 else []
    cuts = _history_cuts(train if cut_on is None else cut_on, column, head + list(recent_cuts), memo, below)
    history, recent = cuts[:len(head)], cuts[len(head):]
    tagged = train.map_batches(_tag_train, batch_format="pyarrow",
                               fn_kwargs={"column": column, "history": history, "recent": recent})
    return tagged, (history[0] if history else None)


def _history_cuts(rows: Any, column: str, quantiles: list[float], memo: CutMemo | None,
                  below: Below | None) -> list[float]:
    if not quantiles:
        return []
    if below is None:
        return boundaries(rows, column, quantiles, memo, rows="train split")
    # the log's edges: not the cuts memos kept on the split's own
    what = {**_memo_key("train split", column, quantiles), "edges": "log"}

    def compute() -> list[float]:
        if column == ROW_ID:
            return _below_line_cuts(quantiles, below)
        return _below_cuts(rows, column, quantiles, below)

    return memo(what, compute) if memo is not None else compute()


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
                   recent_cuts: Sequence[float] = (), memo: CutMemo | None = None, cut_on: Any = None,
                   below: Below | None = None) -> Any:
    """The train split tagged with its windows (cut in log order, as ``tag_history`` does),
    then in ``mode``'s seeded order: row ids permuted and sorted, materialised.

    The order lives in the row ids, so every consumer that reads rows by ascending row id
    (the local engine's ``collect``, Ray Train's ordered shards, the signal join's ranges)
    sees the same order; the history/window cut is taken before the ids change.
    """
    tagged, _ = tag_history(train, column, history_fraction, recent_cuts, memo, cut_on, below)
    permuted = tagged.map_batches(_permute_batch, batch_format="pyarrow", fn_kwargs={"mode": mode, "seed": seed})
    return permuted.sort(ROW_ID).materialize()

