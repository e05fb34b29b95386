"""The 64-bit hash of categorical values that hashing encoders and distinct counts share.

``pandas.util.hash_array`` of the values (strings as Python objects), computed once per
distinct value of a block: a click log's categorical columns repeat their values heavily
(Zipf-distributed ids), and turning a million strings into Python objects to hash them is
most of an encoding pass. Arrow's dictionary encoding finds the distinct values without
leaving Arrow; their hashes are spread back by index. The result is the same array of
hashes bit for bit, so codes and sketches do not move; a column whose values mostly differ
(a sample says so), or that holds nulls, is hashed directly, value by value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_SAMPLE = 4096
_DISTINCT_SHARE = 0.5  # above this share of distinct values in the sample, hash directly


def _hash_objects(values: pa.Array) -> np.ndarray:
    raw = values.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(np.asarray(raw, dtype=object) if raw.dtype == object else raw, categorize=False)


def is_text(t: pa.DataType) -> bool:
    """Arrow's string types, each of which the hash takes as Python strings."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def value_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 hashes of ``values``, equal to
    ``pd.util.hash_array(values.to_numpy(), categorize=False)`` (strings as objects)."""
    if isinstance(values, pa.ChunkedArray):
        # chunk by chunk: a combined string column could pass Arrow's 2 GiB offsets
        parts = [value_hash(c) for c in values.chunks if len(c)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    if not is_text(values.type) or values.null_count or len(values) <= _SAMPLE:
        return _hash_objects(values)
    sample = values.slice(0, _SAMPLE)
    if len(pc.unique(sample)) > _DISTINCT_SHARE * len(sample):
        return _hash_objects(values)
    encoded = pc.dictionary_encode(values)
    return _hash_objects(encoded.dictionary)[encoded.indices.to_numpy(zero_copy_only=False)]
