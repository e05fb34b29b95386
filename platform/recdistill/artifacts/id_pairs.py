"""How an old model's ids line up with a new model's: the groundwork of a transfer from
a saved artifact (CrossAdapt's real use), where the new model may have another
vocabulary or another hash size.

One pass over the raw log encodes every categorical value with both encoders and counts
each distinct (new code, old code) pair per field: the weighted pairs
``transfer.projection.map_rows`` blends the old model's projected rows by. Rows whose
value the old encoder never saw (its OOV code, the value not missing) are counted per
field: the ids the old model cannot teach. Block partials fold on the driver
(``data.reduce``); only distinct pairs travel, never rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from recdistill.data.preprocess import MISSING, OOV, Preprocessor
from recdistill.data.reduce import add_sparse

Partial = dict[str, Any]  # field → (new codes, old codes, counts), and "old_oov_rows": field → rows


def check_fields(old: Preprocessor, new: Preprocessor) -> None:
    """Every categorical field of the new model must exist in the old one (by name)."""
    missing = [f for f in new.schema.categorical if f not in old.fields]
    if missing:
        raise ValueError(f"the old model has no categorical field {', '.join(map(repr, missing))} of the new one; "
                         f"its fields: {', '.join(old.schema.categorical)}")


def pair_counts(batch: pa.Table, old: Preprocessor, new: Preprocessor) -> Partial:
    """One block's distinct (new code, old code) pairs and their row counts, per field."""
    out: Partial = {"old_oov_rows": {}}
    for field in new.schema.categorical:
        col = batch.column(field)
        n_codes, o_codes = new.fields[field].encode(col), old.fields[field].encode(col)
        out["old_oov_rows"][field] = int(np.count_nonzero((o_codes == OOV) & (n_codes != MISSING)))
        keys = n_codes * np.int64(old.fields[field].buckets) + o_codes
        uniq, counts = np.unique(keys, return_counts=True)
        out[field] = (uniq, counts.astype(np.int64))
    return out


def combine(a: Partial, b: Partial) -> Partial:
    out: Partial = {"old_oov_rows": {f: a["old_oov_rows"].get(f, 0) + b["old_oov_rows"].get(f, 0)
                                     for f in a["old_oov_rows"].keys() | b["old_oov_rows"].keys()}}
    for field in a.keys() - {"old_oov_rows"}:
        out[field] = add_sparse(a[field], b[field])
    return out


def as_pairs(acc: Partial, old: Preprocessor, new: Preprocessor
             ) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], dict[str, Any]]:
    """The folded counts as ``project_table``'s pairs (new model's field order) and a report
    per field: distinct pairs, and the rows whose id the old model never saw."""
    pairs, report = [], {}
    for field in new.schema.categorical:
        keys, counts = acc[field]
        width = np.int64(old.fields[field].buckets)
        n_codes, o_codes = keys // width, keys % width
        pairs.append((torch.from_numpy(n_codes), torch.from_numpy(o_codes), torch.from_numpy(counts.astype(np.float64))))
        report[field] = {"pairs": int(len(keys)), "old_oov_rows": int(acc["old_oov_rows"].get(field, 0)),
                         "old_buckets": int(width), "new_buckets": int(new.fields[field].buckets)}
    return pairs, report


def encoder_pairs(raw: Any, old: Preprocessor, new: Preprocessor
                  ) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], dict[str, Any]]:
    """``as_pairs`` over a raw (not yet encoded) Ray Dataset, in one distributed pass."""
    from recdistill.data.reduce import reduce_blocks

    check_fields(old, new)
    acc = reduce_blocks(raw, pair_counts, combine, {"old": old, "new": new})
    if acc is None:
        raise ValueError("the log to pair the encoders on is empty")
    return as_pairs(acc, old, new)
