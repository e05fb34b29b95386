"""Avazu: 24 comma-separated fields, click label, ``hour`` as YYMMDDHH (rules: ``formats``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.data.formats.rows import BAD_LABEL, BAD_TIMESTAMP, Rejects, assemble, row_ids
from recdistill.data.formats.text import Layout, TextStream, row_text
from recdistill.data.formats.values import label01
from recdistill.data.rejects import DataError, RejectTally
from recdistill.data.schema import LABEL, ROW_ID, TS, LogSchema

AVAZU_COLUMNS = ("id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain",
                 "site_category", "app_id", "app_domain", "app_category", "device_id",
                 "device_ip", "device_model", "device_type", "device_conn_type",
                 "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21")
_AVAZU_RAW_CATEGORICAL = AVAZU_COLUMNS[3:]
AVAZU_CATEGORICAL = (*_AVAZU_RAW_CATEGORICAL, "hour_of_day", "weekday")
AVAZU_SCHEMA = LogSchema(dense=(), categorical=AVAZU_CATEGORICAL, has_ts=True, source="avazu")


class AvazuParser:
    def __init__(self, path: str, file_index: int, tally: RejectTally) -> None:
        self.path, self.file_index, self.tally = path, file_index, tally
        self.schema = AVAZU_SCHEMA
        self.layout = Layout(",", AVAZU_COLUMNS, lambda fields: len(fields) > 1 and fields[1] == "click")
        self._header_checked = False

    def _check_header(self, stream: TextStream) -> None:
        self._header_checked = True
        if stream.header is None or tuple(stream.header) == AVAZU_COLUMNS:
            return
        wrong = [f"column {i + 1} is {got!r}, expected {want!r}"
                 for i, (got, want) in enumerate(zip(stream.header, AVAZU_COLUMNS)) if got != want]
        raise DataError(f"{self.path} line 1: Avazu header does not match the expected columns "
                        f"({'; '.join(wrong[:5])}); expected {','.join(AVAZU_COLUMNS)}")

    def convert(self, batch: pa.RecordBatch, lines: np.ndarray, stream: TextStream) -> pa.Table:
        if not self._header_checked:
            self._check_header(stream)
        rej = Rejects(batch.num_rows)
        ok, label = label01(batch.column("click"))
        rej.flag(pc.invert(ok), BAD_LABEL)
        hour = batch.column("hour")
        # YYMMDDHH in UTC; strptime alone would accept short forms like "1410210", and rolls
        # an impossible day over (31 February reads as 3 March), so the day must survive.
        # Kleene: a missing hour (null) must come out False, not null (= not flagged).
        stamp = pc.strptime(hour, format="%y%m%d%H", unit="s", error_is_null=True)
        same_day = pc.equal(pc.utf8_lpad(pc.cast(pc.day(stamp), pa.string()), 2, "0"),
                            pc.utf8_slice_codeunits(hour, 4, 6))
        good = pc.and_kleene(pc.and_kleene(pc.match_substring_regex(hour, r"^[0-9]{8}$"), pc.is_valid(stamp)),
                             pc.fill_null(same_day, False))
        rej.flag(pc.invert(good), BAD_TIMESTAMP, "bad timestamp in hour (expected YYMMDDHH)")
        cols: dict[str, pa.Array] = {ROW_ID: row_ids(self.file_index, lines), LABEL: label,
                                     TS: pc.cast(stamp, pa.int64())}
        for name in _AVAZU_RAW_CATEGORICAL:
            cols[name] = batch.column(name)
        cols["hour_of_day"] = pc.utf8_slice_codeunits(hour, 6, 8)
        cols["weekday"] = pc.cast(pc.day_of_week(stamp), pa.string())  # 0 = Monday
        rej.record(self.tally, self.path, lines, row_text(batch, ","))
        return assemble(self.schema, cols, ~rej.bad)
