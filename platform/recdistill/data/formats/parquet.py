"""Parquet in the canonical layout (as recdistill writes it), checked row by row (rules: ``formats``)."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recdistill.data.formats.rows import BAD_LABEL, MISSING_ROW_ID, NON_NUMERIC_DENSE, Rejects, np_mask
from recdistill.data.rejects import DataError, RejectTally, empty_file_error
from recdistill.data.schema import LABEL, ROW_ID, LogSchema


def parquet_file_schema(path: str, schema: LogSchema | None = None) -> LogSchema:
    """The schema ``iter_parquet`` reads ``path`` with: ``schema`` if given, else the file's metadata."""
    return _resolve_schema(path, pq.read_schema(path), schema)


def _resolve_schema(path: str, arrow_schema: pa.Schema, schema: LogSchema | None) -> LogSchema:
    if schema is not None:
        return schema
    found = LogSchema.from_arrow(arrow_schema)
    if found is None:
        raise DataError(f"{path}: Parquet file has no recdistill schema metadata, so its dense and "
                        f"categorical columns are unknown; write it with recdistill or pass a LogSchema "
                        f"(columns found: {', '.join(arrow_schema.names)})")
    return found


def iter_parquet(path: str, tally: RejectTally, f: Any, schema: LogSchema | None,
                 batch_rows: int = 65_536) -> Iterator[pa.Table]:
    """Stream ``path`` (or the opened file ``f``) in batches of ``batch_rows``; rejected rows go to ``tally``."""
    if f is not None and not getattr(f, "seekable", lambda: False)():
        # Parquet needs random access; a plain input stream is read into memory once.
        f = pa.BufferReader(f.read())
    try:
        pfile = pq.ParquetFile(f if f is not None else path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot be read as parquet: {e}") from e
    log_schema = _resolve_schema(path, pfile.schema_arrow, schema)
    target = log_schema.arrow_schema()
    found = pfile.schema_arrow.names
    for name in target.names:
        if name not in found:
            raise DataError(f"{path}: Parquet file lacks column {name!r} required by its schema "
                            f"(columns found: {', '.join(found)})")
    if pfile.metadata.num_rows == 0:
        raise empty_file_error(path, "parquet")
    done = 0
    ids = _UniqueIds(path)
    for batch in _parquet_batches(pfile, path, batch_rows, list(target.names)):
        n = batch.num_rows
        lines = np.arange(done + 1, done + n + 1, dtype=np.int64)  # 1-based row number in the file
        done += n
        tally.seen(n)
        ids.add(batch.column(ROW_ID))
        rej = Rejects(n)
        rej.flag(pc.is_null(batch.column(ROW_ID)), MISSING_ROW_ID)
        label = batch.column(LABEL)
        rej.flag(pc.invert(pc.is_in(label, value_set=pa.array([0, 1]).cast(label.type))), BAD_LABEL)
        for name in log_schema.dense:
            col = batch.column(name)
            if pa.types.is_floating(col.type):
                # NaN is the layout's missing value; an infinity is no value at all.
                rej.flag(pc.is_inf(col), NON_NUMERIC_DENSE, f"infinite dense value in {name}")

        def text(i: int, b: pa.RecordBatch = batch, first: int = done - n) -> str:
            return f"row {first + i + 1}: row_id={b.column(ROW_ID)[i].as_py()} label={b.column(LABEL)[i].as_py()}"

        rej.record(tally, path, lines, text)
        table = pa.Table.from_batches([batch]).select(list(target.names))
        if rej.bad.any():
            table = table.filter(pa.array(~rej.bad))
        try:
            table = table.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DataError(f"{path}: columns do not convert to the canonical types "
                            f"({target.to_string(show_schema_metadata=False)}): {e}") from e
        if table.num_rows:
            yield table
    ids.finish(pfile)
    if ids.range is not None:
        tally.id_ranges[path] = ids.range


def _parquet_batches(pfile: pq.ParquetFile, path: str, batch_rows: int,
                     columns: list[str]) -> Iterator[pa.RecordBatch]:
    try:
        yield from pfile.iter_batches(batch_size=batch_rows, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: Parquet data is corrupt or truncated: {e}") from e


class _UniqueIds:
    """Checks that no ``row_id`` occurs twice in one Parquet file, in one streaming pass.

    Ids written by recdistill increase through a file, which a running maximum confirms at
    no memory cost. Only when they do not is the ``row_id`` column read once more, sorted
    and searched for a repeat. Rejected rows count too: two rows with one id mean that
    files were mixed or repeated, whichever of them parses.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.increasing = True
        self.range: tuple[int, int] | None = None

    def add(self, col: pa.Array) -> None:
        vals = pc.drop_null(col).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if not len(vals):
            return
        lo, hi = int(vals.min()), int(vals.max())
        if self.increasing and (np.any(vals[1:] <= vals[:-1]) or (self.range and vals[0] <= self.range[1])):
            self.increasing = False
        self.range = (lo, hi) if self.range is None else (min(lo, self.range[0]), max(hi, self.range[1]))

    def finish(self, pfile: pq.ParquetFile) -> None:
        if self.increasing:
            return
        col = pfile.read(columns=[ROW_ID]).column(ROW_ID)
        valid = np_mask(pc.is_valid(col))
        vals = pc.fill_null(col, 0).to_numpy().astype(np.int64, copy=False)
        dup = first_duplicate(vals[valid], np.flatnonzero(valid))
        if dup is not None:
            value, a, b = dup
            raise DataError(f"{self.path}: row_id {value} occurs more than once (rows {a + 1} and {b + 1}); "
                            f"row_id is the join key and must be unique: was a file repeated or "
                            f"were two logs mixed?")


def first_duplicate(ids: np.ndarray, rows: np.ndarray) -> tuple[int, int, int] | None:
    """(id, its first row, its second row) for the smallest id in ``ids`` that occurs twice, or None."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    hit = np.flatnonzero(s[1:] == s[:-1])
    if not len(hit):
        return None
    i = int(hit[0])
    return int(s[i]), int(rows[order[i]]), int(rows[order[i + 1]])
