"""The id pairing between an old and a new encoder (another vocabulary, another hash
size): counted block by block, folded, and consumed by the projection's row mapping."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
import torch

from recdistill.artifacts.id_pairs import as_pairs, check_fields, combine, pair_counts
from recdistill.data.preprocess import FieldEncoding, Preprocessor
from recdistill.data.schema import LogSchema
from recdistill.transfer.projection import map_rows

SCHEMA = LogSchema(dense=(), categorical=("site",))


def _old() -> Preprocessor:  # a vocabulary that knows a and b
    return Preprocessor(SCHEMA, {"site": FieldEncoding("vocab", 4, pd.Index(["a", "b"], dtype=object))})


def _new() -> Preprocessor:  # a hash of another size
    return Preprocessor(SCHEMA, {"site": FieldEncoding("hash", 7)})


def _block(values: list) -> pa.Table:
    return pa.table({"site": pa.array(values, pa.string())})


def test_pairs_are_counted_per_block_and_fold_to_the_whole_log() -> None:
    old, new = _old(), _new()
    blocks = [["a", "a", "b", None], ["c", "a", "b", "c", "c"]]
    acc = combine(pair_counts(_block(blocks[0]), old, new), pair_counts(_block(blocks[1]), old, new))
    whole = pair_counts(_block(blocks[0] + blocks[1]), old, new)
    (n, o, w), = as_pairs(acc, old, new)[0]
    (n2, o2, w2), = as_pairs(whole, old, new)[0]
    assert torch.equal(n, n2) and torch.equal(o, o2) and torch.equal(w, w2)
    report = as_pairs(acc, old, new)[1]["site"]
    assert report["old_oov_rows"] == 3  # "c" three times: unknown to the old vocabulary; None is missing, not OOV
    # each value's pair, counted by rows: a→code 2 three times, b→3 twice, c→OOV three times, missing→0 once
    old_code = {"a": 2, "b": 3, "c": 1, None: 0}
    want = {}
    for v in blocks[0] + blocks[1]:
        key = (int(new.fields["site"].encode(pa.array([v], pa.string()))[0]), old_code[v])
        want[key] = want.get(key, 0) + 1
    assert {(int(a), int(b)): int(c) for a, b, c in zip(n, o, w)} == want
    assert sum(want.values()) == 9


def test_map_rows_blends_the_old_rows_the_pairs_name() -> None:
    old, new = _old(), _new()
    pairs, _ = as_pairs(pair_counts(_block(["a", "a", "b"]), old, new), old, new)
    old_rows = torch.arange(4 * 2, dtype=torch.float64).reshape(4, 2)
    rows, mapped, unmapped = map_rows(old_rows, torch.zeros(7, 2, dtype=torch.float64), pairs[0])
    code_a = int(new.fields["site"].encode(pa.array(["a"]))[0])
    assert torch.equal(rows[code_a], old_rows[2]) and mapped + unmapped == 7 and unmapped > 0


def test_a_field_the_old_model_lacks_is_named() -> None:
    other = Preprocessor(LogSchema(dense=(), categorical=("user",)), {"user": FieldEncoding("hash", 5)})
    with pytest.raises(ValueError, match="no categorical field 'site'.*its fields: user"):
        check_fields(other, _new())
