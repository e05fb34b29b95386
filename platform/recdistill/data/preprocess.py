"""Turn canonical raw rows into model-ready columns: pure batch functions over pyarrow tables.

Categorical codes: 0 = missing, 1 = out of vocabulary, 2.. = known ids, so every field's
embedding table has ``buckets[field]`` rows. Encodings:

- ``identity``: integer ids already dense in ``[0, cardinality)`` (the synthetic log):
  code = id + 2, ids outside the range → OOV.
- ``hash``: code = 2 + hash(value) mod (buckets − 2); no fitting pass, works on streams.
- ``vocab``: code = 2 + rank in a vocabulary of values seen at least ``min_count`` times
  (fitted by a distributed count, see ``fit_vocab``), else OOV.

Dense: sign(x)·log1p(|x|) (counts are heavy-tailed; Criteo has a few negatives), then
missing → ``dense_fill``. Sequence columns share the encoding of their source field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.config import ConfigError, DataConfig
from recdistill.data.schema import LogSchema
from recdistill.data.value_hash import is_text, value_hash

MISSING, OOV, FIRST_ID = 0, 1, 2


@dataclass
class FieldEncoding:
    kind: str  # "identity", "hash" or "vocab"
    buckets: int  # codes in [0, buckets)
    vocab: Any = None  # pandas Index of known values (vocab)

    def encode(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        missing = values.is_null().to_numpy(zero_copy_only=False)
        if self.kind == "identity":
            ids = values.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            codes = np.where((ids >= 0) & (ids < self.buckets - FIRST_ID), ids + FIRST_ID, OOV)
        elif self.kind == "hash":
            h = value_hash(values.fill_null("") if is_text(values.type) else values.fill_null(0))
            codes = (h % np.uint64(self.buckets - FIRST_ID)).astype(np.int64) + FIRST_ID
        else:
            keys = values.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False)
            idx = self.vocab.get_indexer(keys)
            codes = np.where(idx >= 0, idx + FIRST_ID, OOV)
        codes[missing] = MISSING
        return codes.astype(np.int64)


@dataclass
class Preprocessor:
    """Callable for ``Dataset.map_batches(..., batch_format="pyarrow")``; picklable."""

    schema: LogSchema
    fields: dict[str, FieldEncoding]
    dense_transform: str = "log1p"
    dense_fill: float = 0.0

    @property
    def buckets(self) -> dict[str, int]:
        return {name: enc.buckets for name, enc in self.fields.items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        encoded = {*self.schema.dense, *self.schema.categorical, *(s for s, _ in self.schema.sequences)}
        # row_id, label, ts, p_true, sample_rate, window, ... pass through untouched
        cols: dict[str, pa.Array] = {n: batch.column(n) for n in batch.column_names if n not in encoded}
        for name in self.schema.dense:
            x = batch.column(name).to_numpy().astype(np.float32)
            if self.dense_transform == "log1p":
                x = np.sign(x) * np.log1p(np.abs(x))
            cols[name] = pa.array(np.where(np.isnan(x), np.float32(self.dense_fill), x).astype(np.float32))
        for name in self.schema.categorical:
            cols[name] = pa.array(self.fields[name].encode(batch.column(name)))
        for seq, source in self.schema.sequences:
            lists = batch.column(seq).combine_chunks()
            flat = self.fields[source].encode(pc.list_flatten(lists))
            offsets = lists.offsets
            if lists.offset or len(lists.offsets) != len(lists) + 1:
                offsets = pc.subtract(offsets, offsets[0])
            cols[seq] = pa.ListArray.from_arrays(offsets, pa.array(flat), mask=lists.is_null())
        return pa.table(cols)


def identity_encoded(schema: LogSchema, name: str, most_buckets: int) -> bool:
    """Whether a hashed field's ids are dense integers of known cardinality that fit in
    ``most_buckets`` codes (the synthetic log): those are mapped one to one, not hashed."""
    card = schema.cardinality(name)
    return schema.categorical_type == "int64" and card is not None and card + FIRST_ID <= most_buckets


def build_preprocessor(schema: LogSchema, data: DataConfig,
                       vocab: dict[str, pd.Index] | None = None) -> Preprocessor:
    """The encoding per field from the config; ``vocab`` is required for encoding=vocab."""
    fields: dict[str, FieldEncoding] = {}
    if isinstance(data.buckets, dict):
        unknown = sorted(set(data.buckets) - set(schema.categorical))
        if unknown:
            raise ConfigError(f"data.buckets names {', '.join(map(repr, unknown))}, which the log has no categorical "
                              f"field called; its fields: {', '.join(schema.categorical)}")
    for name in schema.categorical:
        if data.encoding == "hash" and identity_encoded(schema, name, data.hash_buckets):
            # Dense integer ids that fit: an identity map loses nothing and collides never.
            fields[name] = FieldEncoding("identity", schema.cardinality(name) + FIRST_ID)
        elif data.encoding == "hash":
            # data.buckets is a mapping once sizing.resolve measured the fields (auto), else every field gets the most
            sized = data.buckets.get(name) if isinstance(data.buckets, dict) else None
            fields[name] = FieldEncoding("hash", sized or data.hash_buckets)
        else:
            if vocab is None or name not in vocab:
                raise ValueError(f"encoding=vocab needs a fitted vocabulary for field {name!r}: "
                                 f"call fit_vocab first")
            fields[name] = FieldEncoding("vocab", len(vocab[name]) + FIRST_ID, vocab[name])
    return Preprocessor(schema, fields, data.dense_transform, data.dense_fill)


def _value_counts(batch: pa.Table, fields: tuple[str, ...]) -> pa.Table:
    """Long table (field, value, count) of one batch: the map side of a distributed count."""
    parts = []
    for name in fields:
        col = batch.column(name)
        vc = pc.value_counts(pc.drop_null(col.cast(pa.string())).combine_chunks())
        parts.append(pa.table({"field": pa.array([name] * len(vc), pa.string()),
                               "value": vc.field("values"), "count": vc.field("counts")}))
    return pa.concat_tables(parts) if parts else pa.table({"field": [], "value": [], "count": []})


def _at_least(batch: pa.Table, min_count: int) -> pa.Table:
    return batch.filter(pc.greater_equal(batch.column("n"), min_count))


def fit_vocab(ds: Any, schema: LogSchema, min_count: int) -> dict[str, pd.Index]:
    """Distributed vocabulary fit on a Ray Dataset: per-batch counts, one shuffle, filter.

    Only values seen ``min_count`` times or more come back to the driver, sorted by
    descending count (ties by value) so codes are deterministic.
    """
    fields = schema.categorical
    import ray
    from ray.data.aggregate import Sum

    # Ray's default of 200 hash partitions costs seconds of actor start-up on a laptop;
    # a few partitions per CPU of the cluster keeps the shuffle parallel everywhere.
    partitions = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    counts = (ds.map_batches(_value_counts, batch_format="pyarrow", fn_kwargs={"fields": fields})
              .groupby(["field", "value"], num_partitions=partitions)
              .aggregate(Sum("count", alias_name="n")))
    kept = counts.map_batches(_at_least, batch_format="pyarrow", fn_kwargs={"min_count": min_count})
    batches = [b for b in kept.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
    table = pa.concat_tables(batches) if batches else None
    vocab: dict[str, pd.Index] = {}
    for name in fields:
        if table is None:
            vocab[name] = pd.Index([], dtype=object)
            continue
        sub = table.filter(pc.equal(table.column("field"), name))
        order = pc.sort_indices(sub, sort_keys=[("n", "descending"), ("value", "ascending")])
        vocab[name] = pd.Index(sub.column("value").take(order).to_pylist(), dtype=object)
    return vocab


_ROWS = "\0rows"  # not a valid column name of any reader, so it never meets a field


def _oov_batch(batch: pa.Table, fields: tuple[str, ...]) -> dict[str, int]:
    """Rows of an encoded batch, and per field the rows whose code is OOV."""
    out = {name: int(np.count_nonzero(batch.column(name).to_numpy() == OOV)) for name in fields}
    out[_ROWS] = batch.num_rows
    return out


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def oov_counts(encoded: Any, pre: Preprocessor) -> dict[str, Any]:
    """Rows of an encoded split whose id is unknown to the encoding, per categorical field.

    A distributed block reduce (no rows on the driver). Hashed fields have no OOV (every id
    lands in a bucket, colliding instead), so they are listed apart, not counted as 0.
    """
    from recdistill.data.reduce import reduce_blocks

    can_oov = tuple(name for name, enc in pre.fields.items() if enc.kind != "hash")
    hashed = sorted(name for name, enc in pre.fields.items() if enc.kind == "hash")
    counts = reduce_blocks(encoded, _oov_batch, _add_counts, {"fields": can_oov}) or {}
    out: dict[str, Any] = {"rows": int(counts.pop(_ROWS, 0)),
                           "fields": {name: int(counts.get(name, 0)) for name in can_oov}}
    if hashed:
        out["hashed_no_oov"] = hashed
    return out
