"""The committee experts' slices of the history (``data.expert_slices``), without Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recdistill.data.expert_slices import SLICE, history_rows, tag_slices
from recdistill.data.schema import ROW_ID, TS
from recdistill.data.windows import HISTORY, STUDENT_WINDOW, WINDOW


def _batch(n: int = 6000) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({ROW_ID: pa.array(np.arange(n, dtype=np.int64)), TS: pa.array(np.arange(n, dtype=np.int64) * 10),
                     "C1": pa.array(rng.integers(0, 50, n)),
                     WINDOW: pa.array(np.where(np.arange(n) < n // 2, HISTORY, STUDENT_WINDOW).astype(np.int32))})


def test_each_rule_tags_every_row_once_and_the_same_way_in_any_block_layout() -> None:
    b = history_rows(_batch())
    assert b.num_rows == 3000
    rules = [{"kind": "hash", "experts": 3},
             {"kind": "time", "experts": 3, "column": TS, "bounds": [10_005.0, 20_005.0]},
             {"kind": "field", "experts": 3, "column": "C1", "codes": [3, 7, 9], "groups": [2, 0, 1]}]
    for rule in rules:
        whole = tag_slices(b, rule).column(SLICE).to_numpy()
        parts = np.concatenate([tag_slices(b.slice(a, 700), rule).column(SLICE).to_numpy() for a in range(0, 3000, 700)])
        assert np.array_equal(whole, parts), rule["kind"]
        assert set(np.unique(whole)) == {0, 1, 2}
        if rule["kind"] == "hash":
            assert np.bincount(whole).min() > 850  # about a third each
        if rule["kind"] == "time":
            assert np.array_equal(whole, np.searchsorted([1000.5, 2000.5], np.arange(3000), side="right"))
        if rule["kind"] == "field":
            c1 = b.column("C1").to_numpy()
            for code, group in zip((3, 7, 9), (2, 0, 1)):
                assert np.all(whole[c1 == code] == group)
            other = ~np.isin(c1, (3, 7, 9))
            # the rest by the code's hash: one group per code
            for code in np.unique(c1[other]):
                assert len(np.unique(whole[c1 == code])) == 1


def test_head_keeps_the_commonest_codes() -> None:
    from recdistill.data.expert_slices import _head

    codes = np.arange(10, dtype=np.int64)
    counts = np.array([5, 1, 9, 3, 7, 2, 8, 0, 6, 4], dtype=np.int64)
    got_codes, got_counts = _head((codes, counts), keep=3)
    assert got_codes.tolist() == [2, 4, 6] and got_counts.tolist() == [9, 7, 8]  # in code order, as add_sparse keeps them
