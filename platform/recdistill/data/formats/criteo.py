"""Criteo: 40 tab-separated fields, label, I1..I13 dense, C1..C26 categorical (rules: ``formats``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.data.formats.rows import BAD_LABEL, NON_NUMERIC_DENSE, Rejects, assemble, row_ids
from recdistill.data.formats.text import Layout, TextStream, row_text
from recdistill.data.formats.values import label01, to_float
from recdistill.data.rejects import RejectTally
from recdistill.data.schema import LABEL, ROW_ID, LogSchema

CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label", *CRITEO_DENSE, *CRITEO_CATEGORICAL)
CRITEO_SCHEMA = LogSchema(dense=CRITEO_DENSE, categorical=CRITEO_CATEGORICAL, source="criteo")


class CriteoParser:
    def __init__(self, path: str, file_index: int, tally: RejectTally) -> None:
        self.path, self.file_index, self.tally = path, file_index, tally
        self.schema = CRITEO_SCHEMA
        self.layout = Layout("\t", CRITEO_COLUMNS, lambda fields: fields[0] == "label")

    def convert(self, batch: pa.RecordBatch, lines: np.ndarray, stream: TextStream) -> pa.Table:
        rej = Rejects(batch.num_rows)
        ok, label = label01(batch.column("label"))
        rej.flag(pc.invert(ok), BAD_LABEL)
        cols: dict[str, pa.Array] = {ROW_ID: row_ids(self.file_index, lines), LABEL: label}
        for name in CRITEO_DENSE:
            vals, bad = to_float(batch.column(name), pa.float32())
            if bad is not None:
                rej.flag(bad, NON_NUMERIC_DENSE, f"non-numeric dense value in {name}")
            cols[name] = pc.fill_null(vals, np.float32("nan"))
        for name in CRITEO_CATEGORICAL:
            cols[name] = batch.column(name)
        rej.record(self.tally, self.path, lines, row_text(batch, "\t"))
        return assemble(self.schema, cols, ~rej.bad)
