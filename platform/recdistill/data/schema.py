"""The canonical click-log layout every source (synthetic or real) is read into.

One row per impression:

    row_id       int64    unique and increasing in log order (file index << 40 | line for files)
    label        int8     0/1 click
    <dense>      float32  raw values, NaN = missing (before preprocessing)
    <categorical>         raw ids: int64 (synthetic, already dense ids) or string (real logs), null = missing
    <sequence>   list<int64 | string>  e.g. a user's recent item ids; ids share the vocabulary of a categorical field
    ts           int64    optional, unix seconds
    p_true       float32  optional (synthetic): true click probability before down-sampling
    sample_rate  float32  optional: probability this row survived down-sampling (1 = kept for sure)

After preprocessing (``data.preprocess``) dense columns are finite float32 and categorical
and sequence columns are int64 codes in ``[0, buckets)``, with 0 reserved for missing and 1
for out-of-vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa

ROW_ID = "row_id"
LABEL = "label"
TS = "ts"
P_TRUE = "p_true"
SAMPLE_RATE = "sample_rate"
DAY = "day"

SCHEMA_METADATA_KEY = b"recdistill.schema"


@dataclass(frozen=True)
class LogSchema:
    dense: tuple[str, ...]
    categorical: tuple[str, ...]
    # (sequence column, categorical field whose ids it holds)
    sequences: tuple[tuple[str, str], ...] = ()
    # per categorical field, the number of distinct raw ids when known (synthetic), else None
    cardinalities: tuple[int | None, ...] | None = None
    categorical_type: str = "string"  # "string" (real logs) or "int64" (synthetic)
    has_ts: bool = False
    user_field: str | None = None
    item_field: str | None = None
    extras: tuple[str, ...] = field(default_factory=tuple)  # p_true, sample_rate, day, ...
    source: str = ""

    def __post_init__(self) -> None:
        if self.cardinalities is not None and len(self.cardinalities) != len(self.categorical):
            raise ValueError("LogSchema: cardinalities must align with categorical fields")
        names = [ROW_ID, LABEL, *self.dense, *self.categorical, *(s for s, _ in self.sequences)]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"LogSchema: duplicate column names {sorted(dup)}")

    @property
    def order_column(self) -> str:
        """Column that orders rows in time: ``ts`` where the format has one, else ``row_id``."""
        return TS if self.has_ts else ROW_ID

    def cardinality(self, name: str) -> int | None:
        if self.cardinalities is None:
            return None
        return self.cardinalities[self.categorical.index(name)]

    def arrow_schema(self) -> pa.Schema:
        cat = pa.int64() if self.categorical_type == "int64" else pa.string()
        fields = [pa.field(ROW_ID, pa.int64(), nullable=False), pa.field(LABEL, pa.int8(), nullable=False)]
        fields += [pa.field(n, pa.float32()) for n in self.dense]
        fields += [pa.field(n, cat) for n in self.categorical]
        fields += [pa.field(s, pa.list_(cat)) for s, _ in self.sequences]
        if self.has_ts:
            fields.append(pa.field(TS, pa.int64()))
        extra_types = {P_TRUE: pa.float32(), SAMPLE_RATE: pa.float32(), DAY: pa.int16()}
        fields += [pa.field(n, extra_types.get(n, pa.float32())) for n in self.extras]
        return pa.schema(fields, metadata={SCHEMA_METADATA_KEY: self.to_json().encode()})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "LogSchema":
        d = json.loads(text)
        d["dense"] = tuple(d["dense"])
        d["categorical"] = tuple(d["categorical"])
        d["sequences"] = tuple(tuple(s) for s in d["sequences"])
        if d.get("cardinalities") is not None:
            d["cardinalities"] = tuple(d["cardinalities"])
        d["extras"] = tuple(d.get("extras", ()))
        return cls(**d)

    @classmethod
    def from_arrow(cls, schema: pa.Schema) -> "LogSchema | None":
        meta = schema.metadata or {}
        raw = meta.get(SCHEMA_METADATA_KEY)
        return cls.from_json(raw) if raw else None
