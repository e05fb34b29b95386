"""Time-ordered splits and windows.

Rows are ordered by ``ts`` where the format has time, else by ``row_id`` (file order, then
line). Boundaries are quantiles of that column computed by a distributed aggregation, so
nothing is gathered on the driver; rows are then routed by a binary search per batch.
Equal-count windows hold for any log; a log whose time column has heavy ties (Avazu's
hourly ``hour``) gets windows that snap to those ties, never one that splits a tick.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

WINDOW = "window"
SPLIT_NAMES = ("train", "valid", "test")


def cut_points(fractions: Sequence[float]) -> list[float]:
    """Interior cumulative cut points of fractions summing to 1: [0.8, 0.1, 0.1] → [0.8, 0.9]."""
    return [float(x) for x in np.cumsum(fractions)[:-1]]


def boundaries(ds: Any, column: str, quantiles: Sequence[float]) -> list[float]:
    """Quantiles of ``column`` over a Ray Dataset (approximate, mergeable sketch)."""
    if not quantiles:
        return []
    from ray.data.aggregate import ApproximateQuantile

    out = ds.aggregate(ApproximateQuantile(on=column, quantiles=list(quantiles), alias_name="q"))
    return [float(v) for v in out["q"]]


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
