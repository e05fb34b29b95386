"""The encoders' value hash: the same hashes as pandas' direct hash of every value,
whichever way it takes (distinct values spread back, or direct)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from recdistill.data.value_hash import value_hash


def _reference(values: pa.Array) -> np.ndarray:
    raw = values.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(np.asarray(raw, dtype=object) if raw.dtype == object else raw, categorize=False)


@settings(max_examples=40, deadline=None)
@given(pool=st.lists(st.text(max_size=12), min_size=1, max_size=50), n=st.integers(0, 9000), seed=st.integers(0, 99))
def test_string_hashes_equal_the_direct_hash(pool: list[str], n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = pa.array([pool[i] for i in rng.integers(0, len(pool), n)], type=pa.string())
    assert np.array_equal(value_hash(values), _reference(values))
    halves = pa.chunked_array([values.slice(0, n // 2), values.slice(n // 2)], type=pa.string())
    assert np.array_equal(value_hash(halves), _reference(values))


def test_mostly_distinct_strings_and_integers_hash_directly_to_the_same_values() -> None:
    rng = np.random.default_rng(0)
    distinct = pa.array([f"{x:016x}" for x in rng.integers(0, 2**62, 10_000)])
    assert np.array_equal(value_hash(distinct), _reference(distinct))
    ints = pa.array(rng.integers(0, 50, 10_000))
    assert np.array_equal(value_hash(ints), _reference(ints))
