"""MovieLens ratings (ml-100k ``u.data``, RecBole ``.inter``) with their side files joined on (rules: ``formats``)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.data import movielens_side as side
from recdistill.data.formats.rows import BAD_TIMESTAMP, NON_NUMERIC_RATING, Rejects, assemble, row_ids
from recdistill.data.formats.text import Layout, TextStream, row_text
from recdistill.data.formats.values import to_float
from recdistill.data.rejects import DataError, RejectTally
from recdistill.data.schema import LABEL, ROW_ID, TS, LogSchema

MOVIELENS_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
MOVIELENS_POSITIVE_RATING = 4.0
MAX_TS = 2.0 ** 63  # timestamps at or above this do not fit the int64 ts column


def movielens_schema(side_columns: tuple[str, ...] = ()) -> LogSchema:
    """MovieLens ratings, with the categorical fields of side files (``data.movielens_side``) after the ids."""
    return LogSchema(dense=(), categorical=("user_id", "item_id", *side_columns), has_ts=True,
                     user_field="user_id", item_field="item_id", source="movielens")


def movielens_file_schema(path: str) -> LogSchema:
    """The schema of ratings file ``path``: the side files found beside it decide its columns."""
    return movielens_schema(side.side_columns(side.find_side_files(path)))


def check_movielens_files(paths: list[str]) -> None:
    """Raise DataError unless every ratings file of one read finds the same side files, and none is one."""
    found = [side.find_side_files(p) for p in paths]
    side_paths = {s.path for specs in found for s in specs}
    for p in paths:
        if os.path.abspath(p) in side_paths:
            raise DataError(f"{p}: a MovieLens side file (joined onto the ratings beside it) is listed as a "
                            f"ratings file; name the ratings files (u.data, u1.base, <name>.inter, or a glob of "
                            f"them), not the dataset directory")
    want = side.side_columns(found[0])
    for p, got in zip(paths[1:], found[1:]):
        if side.side_columns(got) != want:
            raise DataError(f"{p}: MovieLens side files ({side.describe(got)}) give other columns than "
                            f"those of {paths[0]} ({side.describe(found[0])}); every ratings file of one "
                            f"read must find the same side files (u.user/u.item, or <name>.user/"
                            f"<name>.item beside <name>.inter)")


class MovieLensParser:
    def __init__(self, path: str, file_index: int, tally: RejectTally) -> None:
        self.path, self.file_index, self.tally = path, file_index, tally
        self.specs = side.find_side_files(path)
        self.schema = movielens_schema(side.side_columns(self.specs))
        # Loaded once per file (a read task), joined onto every block.
        self.sides = side.load_side_tables(self.specs)
        # u.data has no header; RecBole's .inter starts with `user_id:token\titem_id:token...`.
        self.layout = Layout("\t", None, self._looks_like_header)
        self._positions: tuple[int, ...] | None = None

    def check_planned(self, schema: LogSchema) -> None:
        # The read was planned with ``schema``; a side file that appeared or vanished since
        # (or was not copied to this node of a cluster) would give blocks with other columns.
        if schema != self.schema:
            raise DataError(f"{self.path}: MovieLens side files here ({side.describe(self.specs)}) give columns "
                            f"{', '.join(self.schema.categorical)}, but the read was planned with "
                            f"{', '.join(schema.categorical)}: were side files added, removed or not "
                            f"copied to this machine?")

    @staticmethod
    def _looks_like_header(fields: list[str]) -> bool:
        return any(":" in f for f in fields) or not fields[0].strip().lstrip("-").isdigit()

    def _resolve_columns(self, batch: pa.RecordBatch, stream: TextStream) -> tuple[int, ...]:
        if stream.header is not None:
            names = [h.split(":", 1)[0].strip() for h in stream.header]
            missing = [c for c in MOVIELENS_COLUMNS if c not in names]
            if missing:
                raise DataError(f"{self.path} line 1: MovieLens header lacks {', '.join(missing)} "
                                f"(found {', '.join(stream.header)}); expected "
                                f"{', '.join(MOVIELENS_COLUMNS)} as name:type fields")
            return tuple(names.index(c) for c in MOVIELENS_COLUMNS)
        if batch.num_columns < len(MOVIELENS_COLUMNS):
            raise DataError(f"{self.path}: line 1 has {batch.num_columns} tab-separated fields, expected "
                            f"{len(MOVIELENS_COLUMNS)} ({' '.join(MOVIELENS_COLUMNS)}) or a RecBole header")
        return tuple(range(len(MOVIELENS_COLUMNS)))

    def convert(self, batch: pa.RecordBatch, lines: np.ndarray, stream: TextStream) -> pa.Table:
        if self._positions is None:
            self._positions = self._resolve_columns(batch, stream)
        user, item, rating_s, ts_s = (batch.column(i) for i in self._positions)
        rej = Rejects(batch.num_rows)
        # to_float nulls out what it cannot parse, so null = missing or non-numeric here.
        rating, _ = to_float(rating_s, pa.float64())
        rej.flag(pc.is_null(rating), NON_NUMERIC_RATING, "non-numeric rating")
        ts_f, _ = to_float(ts_s, pa.float64())
        in_range = pc.and_kleene(pc.greater_equal(ts_f, 0.0), pc.less(ts_f, MAX_TS))
        rej.flag(pc.invert(pc.fill_null(in_range, False)), BAD_TIMESTAMP, "bad timestamp (expected unix seconds)")
        # Rejected rows still go through the int64 cast below (they are filtered after), so
        # their values are zeroed first: one out-of-range value would fail the whole block.
        ts_f = pc.if_else(pc.fill_null(in_range, False), ts_f, 0.0)
        label = pc.cast(pc.fill_null(pc.greater_equal(rating, MOVIELENS_POSITIVE_RATING), False), pa.int8())
        cols = {ROW_ID: row_ids(self.file_index, lines), LABEL: label, "user_id": user, "item_id": item,
                TS: pc.cast(pc.floor(pc.fill_null(ts_f, 0.0)), pa.int64())}
        for key, table in self.sides:
            cols.update(zip(table.spec.columns, table.join(cols[key])))
        rej.record(self.tally, self.path, lines, row_text(batch, "\t"))
        return assemble(self.schema, cols, ~rej.bad)


