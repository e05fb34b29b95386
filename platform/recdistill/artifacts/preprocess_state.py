"""The fitted preprocessing as files: what a model needs to encode a raw log exactly as
its run did. The schema, each field's encoding and bucket count, the dense transform as
JSON; a vocabulary (which can hold millions of values) as Parquet, one row per known value
in code order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recdistill.data.preprocess import FieldEncoding, Preprocessor
from recdistill.data.schema import LogSchema

PREPROCESS = "preprocess.json"
VOCAB = "vocab.parquet"


def write_preprocessor(pre: Preprocessor, out: Path) -> list[str]:
    """Write ``pre`` under ``out``; the file names written."""
    spec: dict[str, Any] = {
        "schema": json.loads(pre.schema.to_json()),
        "fields": {name: {"kind": enc.kind, "buckets": enc.buckets} for name, enc in pre.fields.items()},
        "dense_transform": pre.dense_transform, "dense_fill": pre.dense_fill,
        # how codes are laid out, for anyone re-implementing the encoder in serving
        "codes": {"missing": 0, "oov": 1, "first_id": 2, "hash": "2 + pandas.util.hash_array(value) mod (buckets-2)",
                  "vocab": f"2 + position of the value in {VOCAB} (rows of its field, in file order)"},
    }
    (out / PREPROCESS).write_text(json.dumps(spec, indent=2, sort_keys=True))
    written = [PREPROCESS]
    vocab_fields = [(n, e) for n, e in pre.fields.items() if e.kind == "vocab"]
    if vocab_fields:
        names, values = [], []
        for name, enc in vocab_fields:
            names += [name] * len(enc.vocab)
            values += [str(v) for v in enc.vocab]
        pq.write_table(pa.table({"field": pa.array(names, pa.string()), "value": pa.array(values, pa.string())}),
                       out / VOCAB)
        written.append(VOCAB)
    return written


def read_preprocessor(directory: Path) -> Preprocessor:
    """The preprocessor written by ``write_preprocessor``."""
    spec = json.loads((directory / PREPROCESS).read_text())
    schema = LogSchema.from_json(json.dumps(spec["schema"]))
    vocab: dict[str, pd.Index] = {}
    if any(f["kind"] == "vocab" for f in spec["fields"].values()):
        table = pq.read_table(directory / VOCAB)
        fields, values = table.column("field").to_pylist(), table.column("value").to_pylist()
        grouped: dict[str, list[str]] = {}
        for f, v in zip(fields, values):
            grouped.setdefault(f, []).append(v)
        vocab = {f: pd.Index(v, dtype=object) for f, v in grouped.items()}
    encodings = {}
    for name, f in spec["fields"].items():
        enc = FieldEncoding(f["kind"], int(f["buckets"]),
                            vocab.get(name, pd.Index([], dtype=object)) if f["kind"] == "vocab" else None)
        if enc.kind == "vocab" and len(enc.vocab) + 2 != enc.buckets:
            raise ValueError(f"{directory / VOCAB}: field {name!r} has {len(enc.vocab)} values, but "
                             f"{PREPROCESS} says {enc.buckets} buckets (values + 2); the artifact is inconsistent")
        encodings[name] = enc
    return Preprocessor(schema, encodings, spec["dense_transform"], float(spec["dense_fill"]))
