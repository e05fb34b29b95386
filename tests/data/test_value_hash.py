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


def test_the_distinct_value_path_runs_and_equals_the_direct_hash(monkeypatch) -> None:
    import pyarrow.compute as pc

    from recdistill.data import value_hash as module

    calls = []
    encode = pc.dictionary_encode
    monkeypatch.setattr(module.pc, "dictionary_encode", lambda v: calls.append(len(v)) or encode(v))
    rng = np.random.default_rng(1)
    pool = np.array(["", "a", "ünï", "x\x00y", "0000beef"], dtype=object)
    values = pa.array(pool[rng.integers(0, 5, 9000)].tolist(), type=pa.string())
    for variant in (values, values.slice(123), values.cast(pa.large_string()),
                    pa.chunked_array([values.slice(0, 5000), values.slice(5000, 0), values.slice(5000)])):
        assert np.array_equal(value_hash(variant), _reference(pa.chunked_array([variant]).combine_chunks()
                                                              if isinstance(variant, pa.ChunkedArray) else variant))
    # every variant took the distinct-value path (the chunked one in its first chunk; 4,000 rows are hashed directly)
    assert calls == [9000, 8877, 9000, 5000], calls
    with_nulls = pa.array([None if i % 7 == 0 else pool[i % 5] for i in range(9000)], type=pa.string())
    assert np.array_equal(value_hash(with_nulls), _reference(with_nulls))  # nulls: hashed directly, as before


def test_mostly_distinct_strings_and_integers_hash_directly_to_the_same_values() -> None:
    rng = np.random.default_rng(0)
    distinct = pa.array([f"{x:016x}" for x in rng.integers(0, 2**62, 10_000)])
    assert np.array_equal(value_hash(distinct), _reference(distinct))
    ints = pa.array(rng.integers(0, 50, 10_000))
    assert np.array_equal(value_hash(ints), _reference(ints))


def test_the_hash_encoder_takes_large_strings_as_it_takes_strings() -> None:
    """Parquet from Polars and others holds large_string columns: the same codes, nulls missing."""
    from recdistill.data.preprocess import MISSING, FieldEncoding

    values = pa.array(["a", None, "b", "a"] * 1500, type=pa.string())
    enc = FieldEncoding("hash", 1000)
    codes = enc.encode(values)
    assert np.array_equal(enc.encode(values.cast(pa.large_string())), codes)
    assert (codes[1::4] == MISSING).all() and (codes[0::4] == codes[3::4]).all()
