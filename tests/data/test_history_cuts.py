"""The history cut of a train split cut from its log: taken on the log's edges from the split
cut's own histograms (one pass, or none), it equals the cut computed afresh (three passes,
as after a memo hit) and holds exactly its share of the train rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from recdistill.data import windows
from recdistill.data.windows import Below, order_values

pytestmark = pytest.mark.timeout(240)


def _log(seed: int, rows: int = 6000) -> pa.Table:
    """Row ids and times: busy hours, quiet ones and many rows per second (ties the cut must split)."""
    rng = np.random.default_rng(seed)
    hours = rng.choice(48, size=rows, p=np.r_[np.full(24, 3.0), np.full(24, 1.0)] / 96)
    ts = 1_700_000_000 + hours * 3600 + rng.integers(0, 60, size=rows)  # ≤ 60 distinct seconds per hour
    return pa.table({"row_id": np.arange(rows, dtype=np.int64), "ts": ts.astype(np.int64)})


def _dataset(table: pa.Table) -> Any:
    import ray

    return ray.data.from_arrow([table.slice(i, 1000) for i in range(0, table.num_rows, 1000)])


def _rows_below(ds: Any, cut: float) -> Any:
    return ds.map_batches(windows._select, batch_format="pyarrow",
                          fn_kwargs={"column": "ts", "bounds": [cut], "index": 0})


def _exact(x: np.ndarray, below: float | None, cuts: list[float], quantiles: list[float], m: Any) -> None:
    """Each cut is the first fine edge (1/4096² of the log's span) with at least its share of
    the rows below ``below`` (None: all of them) before it."""
    rows = x if below is None else x[x < below]
    fine = (m.hi - m.lo) / 4096 ** 2
    for q, cut in zip(quantiles, cuts):
        need = math.ceil(q * rows.size)
        assert int((rows < cut).sum()) >= need > int((rows < cut - 0.999 * fine).sum()), (q, cut)


class _Passes:
    """Counts the Ray Data passes the cuts make (each is one ``reduce_blocks``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n, real = 0, windows.reduce_blocks

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.n += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(windows, "reduce_blocks", counted)


def test_history_cut_from_the_split_histograms_equals_the_fresh_one_and_is_exact(
        ray_local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _log(0)
    log = _dataset(table)
    passes = _Passes(monkeypatch)
    splits, below = windows.time_splits_below(log, "ts", [0.8, 0.1, 0.1])
    assert passes.n == 3 and below.measured is not None  # min/max, coarse, fine
    train = splits["train"]
    quantiles = [0.5, 0.25, 0.9]
    from_split = windows._history_cuts(train, "ts", quantiles, None, below)
    assert passes.n <= 4  # the bins of the new cuts refined in one pass (none when the split's bin holds them)
    fresh = windows._history_cuts(train, "ts", quantiles, None, Below(log, below.cut, None))
    assert passes.n - 4 <= 3 and fresh == from_split

    x = order_values(table, "ts")
    _exact(x, None, [below.cut], [0.8], below.measured)
    _exact(x, below.cut, from_split, quantiles, below.measured)


def test_a_cut_on_its_bins_right_edge_keeps_that_whole_bin(ray_local: None) -> None:
    """A split cut can fall on the right edge of the coarse bin it refined (the target in its
    last fine bin): the split's rows are then that bin and every bin before it."""
    table = _log(2)
    log = _dataset(table)
    _, m = windows._boundaries(log, "ts", [0.8], None, "log")
    assert m is not None and len(m.fine) == 1
    b = next(iter(m.fine))
    for cut in (windows._fine_edges(m, b)[-1], windows._fine_edges(m, b)[1234]):
        rows = _rows_below(log, float(cut))
        from_split = windows._below_cuts(rows, "ts", [0.3, 0.7], Below(log, float(cut), m))
        fresh = windows._below_cuts(rows, "ts", [0.3, 0.7], Below(log, float(cut), None))
        assert from_split == fresh
        _exact(order_values(table, "ts"), float(cut), from_split, [0.3, 0.7], m)


def test_row_order_history_cut_counts_line_positions_from_the_split_pass(
        ray_local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log without time (Criteo) is cut by line: the history cut comes from the split cut's
    per-file last lines without a pass, equals the cut after a memo hit (one pass over the
    log), and rows missing just before the split cut (rejected, down-sampled) move neither."""
    lines = {0: np.arange(1, 2001), 1: np.arange(1, 3001)}
    ids = np.concatenate([(f << 40) | n for f, n in lines.items()]).astype(np.int64)
    cut = (1 << 40) | 2001  # the 0.8 cut of 5,000 positions: line 2,001 of file 1
    gone = (ids >= cut - 50) & (ids < cut)  # the 50 rows before it are missing
    table = pa.table({"row_id": ids[~gone]})
    log = _dataset(table)
    passes = _Passes(monkeypatch)
    splits, below = windows.time_splits_below(log, "row_id", [0.8, 0.1, 0.1])
    assert passes.n == 1 and below.cut == float(cut)
    quantiles = [0.5, 0.25]
    from_split = windows._history_cuts(splits["train"], "row_id", quantiles, None, below)
    assert passes.n == 1
    fresh = windows._history_cuts(splits["train"], "row_id", quantiles, None, Below(log, below.cut, None))
    assert passes.n == 2 and fresh == from_split
    # 4,000 positions before the cut (file 0's 2,000, then file 1's): 2,000 and 1,000 of them
    assert from_split == [float((1 << 40) | 1), float(1001)]


def test_half_open_histogram_leaves_a_bins_right_edge_to_the_next_bin() -> None:
    edges = np.array([0.0, 1.0, 2.0])
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 2.5])
    assert windows._half_open_histogram(x, edges).tolist() == [2, 1]  # 2.0 is the next bin's, as 1.0 is
    assert np.histogram(x, edges)[0].tolist() == [2, 2]  # numpy closes its last bin
