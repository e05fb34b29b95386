"""Time-ordered splits and windows.

Rows are ordered by ``ts`` where the format has time, else by ``row_id`` (file order, then
line). Boundaries are quantiles of that column computed by distributed passes that return
only histograms or per-file counts, so nothing is gathered on the driver and the same log
always gets the same boundaries; rows are then routed by a binary search per batch.
Equal-count windows hold for any log; a log whose time column has heavy ties (Avazu's
hourly ``hour``) gets windows that snap to those ties, never one that splits a tick.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from recdistill.data.schema import ROW_ID

WINDOW = "window"
SPLIT_NAMES = ("train", "valid", "test")


def cut_points(fractions: Sequence[float]) -> list[float]:
    """Interior cumulative cut points of fractions summing to 1: [0.8, 0.1, 0.1] → [0.8, 0.9]."""
    return [float(x) for x in np.cumsum(fractions)[:-1]]


_BINS = 4096


def boundaries(ds: Any, column: str, quantiles: Sequence[float]) -> list[float]:
    """Deterministic quantiles of ``column`` over a Ray Dataset, with no sort and no gather.

    Time (``ts``): two histogram passes of 4096 bins, the second refining only the bins
    that hold a cut, so a cut is exact to 1/16.7M of the time span and identical on every
    run (a randomised sketch would move the test split between runs). Row order
    (``row_id`` = file index << 40 | line): per-file line counts from one small group-by
    place each cut on an exact line.
    """
    if not quantiles:
        return []
    if column == ROW_ID:
        return _row_order_cuts(ds, quantiles)
    from ray.data.aggregate import Count, Max, Min

    stats = ds.aggregate(Min(column, alias_name="lo"), Max(column, alias_name="hi"), Count(alias_name="n"))
    lo, hi, n = float(stats["lo"]), float(stats["hi"]), int(stats["n"])
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


def _histogram_batch(batch: pa.Table, column: str, edges: list[np.ndarray]) -> pa.Table:
    x = batch.column(column).to_numpy().astype(np.float64)
    counts = [np.histogram(x, bins=e)[0].astype(np.int64) for e in edges]
    return pa.table({"h": [np.concatenate(counts)]})


def _histograms(ds: Any, column: str, edges: list[np.ndarray]) -> list[np.ndarray]:
    """Histograms of ``column`` for several bin sets in one pass; summed as they stream in."""
    total = np.zeros(sum(len(e) - 1 for e in edges), dtype=np.int64)
    counts = ds.map_batches(_histogram_batch, batch_format="pyarrow", batch_size=None,
                            fn_kwargs={"column": column, "edges": edges})
    for b in counts.iter_batches(batch_format="numpy", batch_size=None):
        for h in b["h"]:
            total += np.asarray(h, dtype=np.int64)
    return np.split(total, np.cumsum([len(e) - 1 for e in edges])[:-1])


def _file_lines(batch: pa.Table) -> pa.Table:
    rid = batch.column(ROW_ID).to_numpy()
    return pa.table({"file": rid >> 40, "line": rid & ((1 << 40) - 1)})


def _row_order_cuts(ds: Any, quantiles: Sequence[float]) -> list[float]:
    from ray.data.aggregate import Max

    per_file = (ds.map_batches(_file_lines, batch_format="pyarrow")
                .groupby("file", num_partitions=1).aggregate(Max("line", alias_name="last")))
    rows = sorted((int(r["file"]), int(r["last"])) for r in per_file.iter_rows())
    files = np.array([f for f, _ in rows], dtype=np.int64)
    lines = np.array([last for _, last in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lines)])
    cuts = []
    for q in quantiles:
        pos = q * offsets[-1]
        k = min(int(np.searchsorted(offsets, pos, side="right")) - 1, len(files) - 1)
        line = int(np.ceil(pos - offsets[k]))
        cuts.append(float((files[k] << 40) | max(line, 1)))
    return cuts


def assign(values: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """Index of the interval each value falls in: (-inf, b0), [b0, b1), ..., [b_last, inf)."""
    return np.searchsorted(np.asarray(bounds, dtype=np.float64), values.astype(np.float64),
                           side="right").astype(np.int32)


def _select(batch: pa.Table, column: str, bounds: list[float], index: int) -> pa.Table:
    which = assign(batch.column(column).to_numpy(), bounds)
    return batch.filter(pa.array(which == index))


def _tag(batch: pa.Table, column: str, bounds: list[float]) -> pa.Table:
    return batch.append_column(WINDOW, pa.array(assign(batch.column(column).to_numpy(), bounds)))


def time_splits(ds: Any, column: str, fractions: Sequence[float]) -> dict[str, Any]:
    """Train/valid/test Ray Datasets, time-ordered by ``column`` (lazy; nothing materialised)."""
    bounds = boundaries(ds, column, cut_points(fractions))
    return {name: ds.map_batches(_select, batch_format="pyarrow",
                                 fn_kwargs={"column": column, "bounds": bounds, "index": i})
            for i, name in enumerate(SPLIT_NAMES)}


def with_windows(ds: Any, column: str, num_windows: int) -> tuple[Any, list[float]]:
    """Add an int32 ``window`` column: equal-count time windows 0..num_windows-1."""
    bounds = boundaries(ds, column, [i / num_windows for i in range(1, num_windows)])
    tagged = ds.map_batches(_tag, batch_format="pyarrow", fn_kwargs={"column": column, "bounds": bounds})
    return tagged, bounds
