"""Checked conversion of string columns (text formats) to numbers and 0/1 labels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.data.formats.rows import np_mask

# RE2 (pyarrow) and Python `re` agree on this.
NUMBER_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_LABELS01 = pa.array(["0", "1"])


def to_float(col: pa.Array, typ: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """Parse a string column; returns (values with null for missing, mask of non-numeric or None)."""
    try:
        vals = pc.cast(col, typ)
        bad = None
    except pa.ArrowInvalid:
        # Rare path: find the offending values, blank them and parse the rest.
        # Kleene: a missing value (null) is fine; plain or_ would make it null, i.e. bad.
        ok = pc.or_kleene(pc.match_substring_regex(col, NUMBER_RE), pc.is_null(col))
        bad = ~np_mask(ok)
        cleaned = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), col)
        try:
            vals = pc.cast(cleaned, typ)
        except pa.ArrowInvalid:
            vals, bad = _to_float_slow(cleaned, typ, bad)
    # "nan"/"inf" parse but are not values (NaN already means missing), and an overflow to
    # inf would be silent.
    nonfinite = pc.invert(pc.fill_null(pc.is_finite(vals), True))
    if pc.any(nonfinite).as_py():
        nonfinite_np = np_mask(nonfinite)
        bad = nonfinite_np if bad is None else (bad | nonfinite_np)
        vals = pc.if_else(nonfinite, pa.scalar(None, typ), vals)
    return vals, bad


def _to_float_slow(col: pa.Array, typ: pa.DataType, bad: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    # Only reached when the regex accepted something Arrow's parser does not.
    out = []
    bad = bad.copy()
    for i, v in enumerate(col.to_pylist()):
        try:
            out.append(None if v is None else float(v))
        except ValueError:
            out.append(None)
            bad[i] = True
    return pa.array(out, type=typ), bad


def label01(col: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(mask of valid ``0``/``1`` labels, the label as int8)."""
    ok = pc.is_in(col, value_set=_LABELS01)
    return ok, pc.cast(pc.equal(col, "1"), pa.int8())
