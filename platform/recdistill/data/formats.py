"""Parsers that stream one click-log file into the canonical layout (``data.schema``).

Pure pyarrow/numpy, no Ray: ``data.datasource`` wraps these for Ray Data, and tests and
tools can call them directly. Every text format goes through one streaming path:

* ``pyarrow.csv.open_csv`` reads all columns as strings with ``use_threads=False``, so that
  the ``invalid_row_handler`` sees rows in order with their physical 1-based line number.
  Rows with the wrong number of fields are rejected there.
* Quoting is off: a physical line is always one row, so line numbers stay exact and a
  stray ``"`` is data rather than the start of a multi-line field.
* The physical line of every accepted row is recovered from the handler's line numbers
  (``_TextStream``), so row ids stay true even after rejected or blank lines.
* Values are checked and converted with ``pyarrow.compute`` on whole columns; a row that
  fails a check is counted in the ``RejectTally`` under a reason and not yielded. Masks are
  combined with the Kleene forms (``and_kleene``/``or_kleene``): with the plain forms a null
  (missing value) poisons the result and the row lands under the wrong verdict.
* Bytes reach the CSV reader through ``_Utf8Lines``: a line that is not valid UTF-8 is
  rejected as ``invalid UTF-8`` (Arrow would otherwise fail the whole file), and a read or
  decompression error (truncated .gz/.bz2/.zst) is a ``DataError`` naming the file.

Per-row rules (each failing row counted under the first reason, in this order):

* all text formats: a line with bytes that are not UTF-8 -> ``invalid UTF-8``; a line that
  holds nothing, or (criteo, avazu, movielens) only empty fields, is blank: counted apart,
  not a reject. A UTF-8 byte order mark at the start and ``\n``, ``\r\n`` or ``\r`` line
  endings are accepted.
* criteo: 40 tab-separated fields, else ``wrong field count``; label ``0``/``1``; each of
  I1..I13 empty (missing, NaN) or a decimal number (``NUMBER_RE``) that is finite as float32,
  else ``non-numeric dense value``.
* avazu: 24 comma-separated fields; click ``0``/``1``; ``hour`` exactly 8 digits YYMMDDHH
  naming a real hour of the calendar (no 31 February), else ``bad timestamp`` (an empty hour
  too).
* movielens: tab-separated user, item, rating, timestamp (a RecBole header may reorder them);
  as many fields as line 1, else ``wrong field count``; rating a finite number, else
  ``non-numeric rating``; timestamp a number in [0, 2**63) seconds, else ``bad timestamp``.
  Side files beside the ratings file join on as categorical fields, automatically: RecBole
  ``<name>.user``/``<name>.item`` beside ``<name>.inter`` (``ml-1m.train.inter`` takes
  ``ml-1m.user`` too), else ml-100k's ``u.user``/``u.item`` beside any other ratings file
  (``u.data``, ``u1.base``...). They give ``user_age``, ``user_gender``, ``user_occupation``,
  ``user_zip``, ``item_year``, ``item_genres`` (the sorted genre set, one id) and
  ``item_genres_first``; a user or item the side file lacks gets nulls, not a reject; a
  malformed side file is a ``DataError`` naming its line (``data.movielens_side``). The
  schema follows the side files, so every file of a read (``schema_for_files``) and every
  split must find the same ones. Without side files nothing changes.
* libsvm: ``label idx:1 ... idx:1`` split on any whitespace; label in ``0 1 -1 +1``; every
  feature token ``digits:1`` (``:1.0`` too), else ``bad libsvm token``; then label, else
  ``label not in {0,1}``; then exactly k features (k from the first valid line), else
  ``wrong field count``.
* parquet: null ``row_id`` -> ``missing row_id``; label not 0/1 -> ``label not in {0,1}``; an
  infinite dense value -> ``non-numeric dense value`` (NaN is the layout's missing value, so
  it stays). A ``row_id`` seen twice in a file is a ``DataError`` naming the file, the id and
  both rows (ids are the join key; rows already streamed cannot be taken back).

``row_id = (file_index << 40) | line`` makes ids unique and increasing in log order across
the sorted file list.
"""

from __future__ import annotations

import bisect
import glob
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recdistill.data import movielens_side as side
from recdistill.data.rejects import DataError, RejectTally, empty_file_error, missing_file_error
from recdistill.data.schema import LABEL, ROW_ID, TS, LogSchema

FORMATS = ("criteo", "avazu", "libsvm", "movielens", "parquet")
TEXT_FORMATS = ("criteo", "avazu", "libsvm", "movielens")
HEADER_MODES = ("auto", "yes", "no")

LINE_BITS = 40
MAX_FILES = 1 << (63 - LINE_BITS)
DEFAULT_BLOCK_SIZE = 4 << 20  # bytes of text per parsed block; larger blocks ran slower (cache)
LIBSVM_SNIFF_BYTES = 4 << 20  # the first valid line, which fixes the field count, must lie in here

# Reject reason keys: the detail (column, expected vs found) goes into each example.
WRONG_FIELD_COUNT = "wrong field count"
BAD_LABEL = "label not in {0,1}"
NON_NUMERIC_DENSE = "non-numeric dense value"
NON_NUMERIC_RATING = "non-numeric rating"
BAD_TIMESTAMP = "bad timestamp"
BAD_LIBSVM_TOKEN = "bad libsvm token"
MISSING_ROW_ID = "missing row_id"
INVALID_UTF8 = "invalid UTF-8"
REASONS = (WRONG_FIELD_COUNT, BAD_LABEL, NON_NUMERIC_DENSE, NON_NUMERIC_RATING, BAD_TIMESTAMP,
           BAD_LIBSVM_TOKEN, MISSING_ROW_ID, INVALID_UTF8)

# RE2 (pyarrow) and Python `re` agree on these.
NUMBER_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# One-hot libSVM: `index:1`. Another value would be a dense feature that a categorical
# field cannot hold, so it is rejected rather than dropped.
LIBSVM_TOKEN_RE = r"^[0-9]+:1(\.0*)?$"
# The common exact form, which the column-wise fast path takes.
_LIBSVM_PLAIN_LINE = re.compile(r"^(0|1|-1|\+1)( [0-9]+:1)+\r?$")
LIBSVM_LABELS = ("0", "1", "-1", "+1")
LIBSVM_POSITIVE = ("1", "+1")
_LABELS01 = pa.array(["0", "1"])
MAX_TS = 2.0 ** 63  # timestamps at or above this do not fit the int64 ts column
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".br")  # what compression="detect" opens

CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label", *CRITEO_DENSE, *CRITEO_CATEGORICAL)

AVAZU_COLUMNS = ("id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain",
                 "site_category", "app_id", "app_domain", "app_category", "device_id",
                 "device_ip", "device_model", "device_type", "device_conn_type",
                 "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21")
_AVAZU_RAW_CATEGORICAL = AVAZU_COLUMNS[3:]
AVAZU_CATEGORICAL = (*_AVAZU_RAW_CATEGORICAL, "hour_of_day", "weekday")

MOVIELENS_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
MOVIELENS_POSITIVE_RATING = 4.0
_MAX_AUTO_COLUMNS = 256  # column_types for autogenerated names f0..f255 (all strings)


# ------------------------------------------------------------------------- schemas


def schema_for(fmt: str, num_fields: int | None = None) -> LogSchema:
    """The canonical schema of a text format (parquet files carry their own: ``schema_for_file``)."""
    _check_format(fmt)
    if fmt == "criteo":
        return LogSchema(dense=CRITEO_DENSE, categorical=CRITEO_CATEGORICAL, source="criteo")
    if fmt == "avazu":
        return LogSchema(dense=(), categorical=AVAZU_CATEGORICAL, has_ts=True, source="avazu")
    if fmt == "movielens":
        return movielens_schema()
    if fmt == "libsvm":
        if num_fields is None or num_fields < 1:
            raise DataError("libsvm: the number of fields depends on the file; pass num_fields "
                            "or use schema_for_file(path, 'libsvm')")
        return LogSchema(dense=(), categorical=tuple(f"f{i}" for i in range(num_fields)), source="libsvm")
    raise DataError("parquet: the schema comes from the file's metadata; use schema_for_file(path, 'parquet')")


def movielens_schema(side_columns: tuple[str, ...] = ()) -> LogSchema:
    """MovieLens ratings, with the categorical fields of side files (``data.movielens_side``) after the ids."""
    return LogSchema(dense=(), categorical=("user_id", "item_id", *side_columns), has_ts=True,
                     user_field="user_id", item_field="item_id", source="movielens")


def schema_for_file(path: str, fmt: str, schema: LogSchema | None = None,
                    num_fields: int | None = None) -> LogSchema:
    """The schema ``iter_file`` will produce for ``path``; an explicit ``schema`` wins for parquet."""
    _check_format(fmt)
    _check_exists(path)
    if fmt == "parquet":
        return _parquet_schema(path, pq.read_schema(path), schema)
    if fmt == "libsvm":
        return schema_for(fmt, num_fields if num_fields is not None else sniff_libsvm_fields(path))
    if fmt == "movielens":
        return movielens_schema(side.side_columns(side.find_side_files(path)))
    return schema_for(fmt)


def schema_for_files(paths: list[str], fmt: str, schema: LogSchema | None = None,
                     num_fields: int | None = None) -> LogSchema:
    """The one schema of a read of ``paths``: the first file's (``schema_for_file``).

    MovieLens files must agree, since their side files decide their columns: a file that
    finds other side files than the first, or a side file listed as ratings (a dataset
    directory given as the path), is a ``DataError`` raised before any row is read.
    """
    if fmt == "movielens":
        _check_movielens_files(paths)
    return schema_for_file(paths[0], fmt, schema=schema, num_fields=num_fields)


def _check_movielens_files(paths: list[str]) -> None:
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


def sniff_libsvm_fields(path: str) -> int:
    """Feature count of the first valid line (what ``iter_file`` fixes the file's field count to)."""
    _check_exists(path)
    with pa.input_stream(path, compression="detect") as f:
        k, _, _ = _peek_libsvm(f, path)
    return k


def _parquet_schema(path: str, arrow_schema: pa.Schema, schema: LogSchema | None) -> LogSchema:
    if schema is not None:
        return schema
    found = LogSchema.from_arrow(arrow_schema)
    if found is None:
        raise DataError(f"{path}: Parquet file has no recdistill schema metadata, so its dense and "
                        f"categorical columns are unknown; write it with recdistill or pass a LogSchema "
                        f"(columns found: {', '.join(arrow_schema.names)})")
    return found


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DataError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise missing_file_error(path)


# --------------------------------------------------------------------------- paths


def _visible(name: str) -> bool:
    # Same rule as Ray's file listing: hidden files and `_SUCCESS`/`_metadata`-style
    # markers are not data.
    return not name.startswith((".", "_"))


def expand_paths(path: str | os.PathLike | list | tuple) -> list[str]:
    """Absolute, sorted data files of a file, a directory (recursively) or a glob, or a list of them."""
    if isinstance(path, (list, tuple)):
        out = sorted({p for item in path for p in expand_paths(item)})
        if not out:
            raise DataError(f"no files match {list(path)!r}")
        return out
    text = os.fspath(path)
    if os.path.isfile(text):
        return [os.path.abspath(text)]
    if os.path.isdir(text):
        found = []
        for root, dirs, files in os.walk(text):
            dirs[:] = [d for d in dirs if _visible(d)]
            found += [os.path.join(root, f) for f in files if _visible(f)]
        if not found:
            raise DataError(f"no files match {text!r}: the directory holds no data files "
                            f"(names starting with '.' or '_' are skipped)")
        return sorted(os.path.abspath(p) for p in found)
    if glob.has_magic(text):
        found = [p for p in glob.glob(text, recursive=True) if os.path.isfile(p) and _visible(os.path.basename(p))]
        if not found:
            raise DataError(f"no files match {text!r}")
        return sorted(os.path.abspath(p) for p in found)
    raise DataError(f"no files match {text!r}: it does not exist")


# ---------------------------------------------------------------------- public API


def iter_file(path: str, fmt: str, file_index: int, tally: RejectTally, header: str = "auto",
              f: Any = None, *, num_fields: int | None = None, schema: LogSchema | None = None,
              block_size: int = DEFAULT_BLOCK_SIZE) -> Iterator[pa.Table]:
    """Stream ``path`` as tables in the canonical layout; rejected rows go to ``tally``.

    ``f`` is an already opened pyarrow file (Ray hands one over); when None the file is
    opened here. ``num_fields`` fixes the libsvm field count (default: the first valid
    line's); ``schema`` is the LogSchema of a Parquet file without recdistill metadata, or
    (movielens) the one the read was planned with, which this file's side files must give.
    Raises DataError for a missing or empty file or a structural problem (bad header,
    missing column); per-row problems are only counted (the caller checks the budget).
    """
    _check_format(fmt)
    if header not in HEADER_MODES:
        raise DataError(f"header={header!r}: expected one of {', '.join(HEADER_MODES)}")
    if not 0 <= file_index < MAX_FILES:
        raise DataError(f"file_index {file_index} out of range [0, {MAX_FILES})")
    tally.add_file(path)
    if f is None:
        _check_exists(path)
        if os.path.getsize(path) == 0:
            raise empty_file_error(path, fmt)
    if fmt == "parquet":
        yield from _iter_parquet(path, file_index, tally, f, schema)
        return
    own = f is None
    source = pa.input_stream(path, compression="detect") if own else f
    try:
        checked = _Utf8Lines(source, path, fmt)
        text_source: Any = checked
        if fmt == "libsvm":
            k, plain, text_source = _peek_libsvm(checked, path)
            parser = _LibSVM(path, fmt, file_index, tally, header, num_fields or k, plain)
        else:
            parser = _PARSERS[fmt](path, fmt, file_index, tally, header, num_fields)
            if fmt == "movielens" and schema is not None:
                parser.check_planned(schema)
        stream = _TextStream(text_source, path, fmt, tally, parser.layout, header, block_size,
                             checked.bad_lines)
        for batch, lines in stream:
            table = parser.convert(batch, lines, stream)
            if table is not None and table.num_rows:
                yield table
    finally:
        if own:
            source.close()


# ------------------------------------------------------------- streaming text read


class _Utf8Lines:
    """A read-only byte stream over ``source`` that passes on only valid UTF-8.

    Arrow's CSV reader fails a whole block on a string field that is not UTF-8, and cannot
    hand such a row to the invalid-row handler at all (decoding its text fails before the
    handler runs: "Exception ignored", then the file fails). So each line with bad bytes is
    recorded in ``bad_lines`` (physical line number -> text with the bytes escaped) and
    passed on with them replaced by U+FFFD, for ``_TextStream`` to reject by line number.
    Bytes below 0x80 are always valid, so delimiters and line breaks (hence field counts
    and line numbers) are untouched. Lines are counted as Arrow counts them: ``\n``,
    ``\r\n`` and a lone ``\r`` each end one.

    Read and decompression errors (a truncated or corrupt .gz/.bz2/.zst) become a
    ``DataError`` naming the file: how many rows were lost past the damage is unknowable,
    so they cannot be counted against the error budget.
    """

    def __init__(self, source: Any, path: str, fmt: str) -> None:
        self._src, self.path, self.fmt = source, path, fmt
        self.bad_lines: dict[int, str] = {}
        self._pending = b""  # raw bytes after the last complete line break
        self._out = bytearray()  # checked bytes not yet handed out
        self._breaks = 0  # line breaks in the bytes checked so far
        self._eof = False
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        want = n if n is not None and n >= 0 else None
        while not self._eof and (want is None or len(self._out) < want):
            chunk = self._read_raw(max(want or 0, 1 << 20))
            if not chunk:
                self._eof = True
                self._check(self._pending)
                self._pending = b""
                break
            data = self._pending + chunk
            cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            if cut == len(data) and data.endswith(b"\r"):
                # A \r at the very end may be the first half of \r\n: wait for the next byte.
                cut = max(data.rfind(b"\n", 0, cut - 1), data.rfind(b"\r", 0, cut - 1)) + 1
            self._check(data[:cut])
            self._pending = data[cut:]
        if want is None:
            out = bytes(self._out)
            self._out.clear()
        else:
            # Arrow takes a short read for the end of the file, so this fills the request.
            out = bytes(self._out[:want])
            del self._out[:want]
        return out

    def _read_raw(self, n: int) -> bytes:
        try:
            return self._src.read(n)
        except OSError as e:
            compressed = self.path.lower().endswith(COMPRESSED_SUFFIXES)
            what = "compressed data is truncated or corrupt" if compressed else "read failed"
            raise DataError(f"{self.path}: {what} ({e}); {self._breaks:,} complete lines of {self.fmt} "
                            f"text came before it, nothing after it can be read") from e

    def _check(self, seg: bytes) -> None:
        first = self._breaks + 1  # line number of seg's first line
        self._breaks += seg.count(b"\n")
        if b"\r" in seg:
            self._breaks += seg.count(b"\r") - seg.count(b"\r\n")
        if seg.isascii():
            self._out += seg
            return
        try:
            seg.decode("utf-8")
            self._out += seg
            return
        except UnicodeDecodeError:
            pass
        # bytes.splitlines breaks on exactly \n, \r\n and \r, as Arrow does.
        for i, line in enumerate(seg.splitlines(keepends=True)):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                self.bad_lines[first + i] = line.decode("utf-8", "backslashreplace").rstrip("\r\n")
                line = line.decode("utf-8", "replace").encode("utf-8")
            self._out += line

    def close(self) -> None:
        self.closed = True


@dataclass
class _Layout:
    delimiter: str
    columns: tuple[str, ...] | None  # None: as many as line 1 has, named f0, f1, ...
    looks_like_header: Callable[[list[str]], bool]
    nulls: bool = True  # empty field -> null (and an all-null row is a blank line)
    defer_invalid: bool = False  # hand rows with another field count to the parser, not reject them


class _TextStream:
    """Batches of string columns of one delimited file, each row paired with its physical line.

    Header and blank lines are removed here; rows with the wrong number of fields are
    rejected by the CSV reader's handler and counted, and so are the lines in ``bad_lines``
    (``_Utf8Lines``: not UTF-8), whichever way they come. ``header`` holds line 1's fields
    when it was a header.
    """

    def __init__(self, source: Any, path: str, fmt: str, tally: RejectTally, layout: _Layout,
                 header_mode: str, block_size: int, bad_lines: dict[int, str] | None = None) -> None:
        self.path, self.fmt, self.tally, self.layout = path, fmt, tally, layout
        self._bad_lines = bad_lines if bad_lines is not None else {}
        self._bad_found: list[int] = []  # bad lines the handler took, reported with their batch
        self.header_mode = header_mode
        self.header: list[str] | None = None
        self._bad_header: str | None = None
        self._skipped: list[int] = []  # physical lines the handler took out, increasing
        self._parsed = 0  # rows the reader has returned so far
        self._folded = 0  # skipped lines before the last row returned, dropped from _skipped
        self.data_rows = 0
        self.rejected_lines = 0  # by the handler
        self._deferred_lines: list[int] = []
        self._deferred_texts: list[str] = []
        self._upto = 0  # last line of the rows returned so far
        read = pacsv.ReadOptions(use_threads=False, block_size=block_size,
                                 column_names=list(layout.columns) if layout.columns else None,
                                 autogenerate_column_names=layout.columns is None)
        names = layout.columns or tuple(f"f{i}" for i in range(_MAX_AUTO_COLUMNS))
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                       null_values=[""] if layout.nulls else [],
                                       strings_can_be_null=layout.nulls,
                                       quoted_strings_can_be_null=layout.nulls)
        parse = pacsv.ParseOptions(delimiter=layout.delimiter, quote_char=False, escape_char=False,
                                   ignore_empty_lines=False, invalid_row_handler=self._on_invalid)
        try:
            self._reader = pacsv.open_csv(source, read_options=read, parse_options=parse,
                                          convert_options=convert)
        except pa.ArrowInvalid as e:
            raise self._arrow_error(e) from e

    def _arrow_error(self, e: Exception) -> DataError:
        if "Empty CSV file" in str(e):
            return empty_file_error(self.path, self.fmt)
        return DataError(f"{self.path}: cannot be read as {self.fmt}: {e}")

    def _on_invalid(self, row: Any) -> str:
        self._skipped.append(row.number)
        if row.number == 1 and self.header_mode != "no":
            fields = row.text.split(self.layout.delimiter)
            if self.header_mode == "yes" or self.layout.looks_like_header(fields):
                self._bad_header = row.text
                return "skip"
        if row.number in self._bad_lines:
            self._bad_found.append(row.number)
            return "skip"
        if self.layout.defer_invalid:
            self._deferred_lines.append(row.number)
            self._deferred_texts.append(row.text)
            return "skip"
        self.tally.seen(1)
        self.rejected_lines += 1
        detail = f"wrong number of fields (expected {row.expected_columns}, got {row.actual_columns})"
        self.tally.add(WRONG_FIELD_COUNT, self.path, row.number, row.text, detail)
        return "skip"

    def _reject_bad_lines(self, in_batch: list[int]) -> None:
        # Lines from the handler and from the batch together, so examples come in line order.
        numbers = sorted(self._bad_found + in_batch)
        self._bad_found.clear()
        if not numbers:
            return
        texts = [self._bad_lines.pop(n) for n in numbers]
        self.tally.seen(len(numbers))
        self.rejected_lines += len(numbers)
        self.tally.add_many(INVALID_UTF8, self.path, numbers[:5], texts[:5],
                            ["bytes that are not UTF-8 (shown escaped)"] * min(5, len(numbers)))

    def _raise_bad_header(self) -> None:
        if self._bad_header is not None:
            got = len(self._bad_header.split(self.layout.delimiter))
            raise DataError(f"{self.path} line 1: header has {got} fields, expected "
                            f"{len(self.layout.columns or ())}: {self._bad_header[:200]!r}")

    def take_deferred(self) -> tuple[list[int], list[str]]:
        """Lines the handler set aside (``defer_invalid``) up to the current batch: numbers, texts.

        The reader may parse ahead of the batch it returns; later lines wait for their own
        batch so that tables come out in line order.
        """
        cut = bisect.bisect_right(self._deferred_lines, self._upto)
        out = self._deferred_lines[:cut], self._deferred_texts[:cut]
        del self._deferred_lines[:cut], self._deferred_texts[:cut]
        return out

    def _lines(self, n: int) -> np.ndarray:
        # Rows come back in file order minus the skipped lines, so the k-th row returned
        # (1-based) sits at line k + #{skipped lines before it}: a searchsorted against the
        # skipped lines shifted by their rank. Skips before the rows already returned are
        # folded into a count, so a file with many rejects stays linear.
        pos = np.arange(self._parsed + 1, self._parsed + n + 1, dtype=np.int64) + self._folded
        self._parsed += n
        if not self._skipped:
            return pos
        skipped = np.asarray(self._skipped, dtype=np.int64)
        lines = pos + np.searchsorted(skipped - np.arange(len(skipped)), pos, side="right")
        if n:
            done = int(np.searchsorted(skipped, lines[-1]))
            self._folded += done
            del self._skipped[:done]
        return lines

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        while True:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                self._reject_bad_lines([])
                self._upto = np.iinfo(np.int64).max
                if self._deferred_lines:
                    # Set-aside lines after the last returned row still need a parser pass.
                    yield pa.RecordBatch.from_pylist([], schema=self._reader.schema), np.zeros(0, np.int64)
                break
            except pa.ArrowInvalid as e:
                raise self._arrow_error(e) from e
            self._raise_bad_header()
            lines = self._lines(batch.num_rows)
            if len(lines):
                self._upto = int(lines[-1])
            keep = np.ones(batch.num_rows, dtype=bool)
            if batch.num_rows and lines[0] == 1 and self.header_mode != "no":
                first = ["" if v is None else v for v in (c[0].as_py() for c in batch.columns)]
                if self.header_mode == "yes" or self.layout.looks_like_header(first):
                    self.header = first
                    keep[0] = False
            blank = self._blank_rows(batch)
            if blank is not None:
                self.tally.blank(int((blank & keep).sum()))
                keep &= ~blank
            if self._bad_lines:
                bad = keep & np.isin(lines, np.fromiter(self._bad_lines, np.int64, len(self._bad_lines)))
                self._reject_bad_lines([int(x) for x in lines[bad]])
                keep &= ~bad
            if not keep.all():
                batch, lines = batch.filter(pa.array(keep)), lines[keep]
            self.data_rows += batch.num_rows
            self.tally.seen(batch.num_rows)
            yield batch, lines
        self._raise_bad_header()
        if self.data_rows == 0 and self.rejected_lines == 0 and not self.layout.defer_invalid:
            raise empty_file_error(self.path, self.fmt)

    def _blank_rows(self, batch: pa.RecordBatch) -> np.ndarray | None:
        if not self.layout.nulls:
            return None  # the parser sees blank lines itself
        first = batch.column(0)
        # An empty line reads as a row of nulls. Checking column 0 first keeps the
        # common case (no nulls there) at one cheap kernel.
        if first.null_count == 0:
            return None
        mask = pc.is_null(first)
        for col in batch.columns[1:]:
            mask = pc.and_kleene(mask, pc.is_null(col))
        return mask.to_numpy(zero_copy_only=False)


# ------------------------------------------------------------------ row checking


@dataclass
class _Rejects:
    """Per-batch reject masks; each row is counted once, under the first reason it fails."""

    n: int
    bad: np.ndarray = field(init=False)
    found: list[tuple[str, str, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bad = np.zeros(self.n, dtype=bool)

    def flag(self, mask: np.ndarray | pa.Array | pa.ChunkedArray, reason: str, detail: str | None = None) -> None:
        m = _np_mask(mask)
        new = m & ~self.bad
        if new.any():
            self.found.append((reason, detail or reason, np.flatnonzero(new)))
            self.bad |= m

    def record(self, tally: RejectTally, path: str, lines: np.ndarray,
               text: Callable[[int], str]) -> None:
        for reason, detail, idx in self.found:
            first = idx[:5]
            tally.add_many(reason, path, [int(lines[i]) for i in first], [text(int(i)) for i in first],
                           [detail] * len(first), count=len(idx))


def _np_mask(mask: np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        return mask
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _row_text(batch: pa.RecordBatch, delimiter: str) -> Callable[[int], str]:
    def text(i: int) -> str:
        return delimiter.join("" if c[i].as_py() is None else c[i].as_py() for c in batch.columns)
    return text


def _to_float(col: pa.Array, typ: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """Parse a string column; returns (values with null for missing, mask of non-numeric or None)."""
    try:
        vals = pc.cast(col, typ)
        bad = None
    except pa.ArrowInvalid:
        # Rare path: find the offending values, blank them and parse the rest.
        # Kleene: a missing value (null) is fine; plain or_ would make it null, i.e. bad.
        ok = pc.or_kleene(pc.match_substring_regex(col, NUMBER_RE), pc.is_null(col))
        bad = ~_np_mask(ok)
        cleaned = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), col)
        try:
            vals = pc.cast(cleaned, typ)
        except pa.ArrowInvalid:
            vals, bad = _to_float_slow(cleaned, typ, bad)
    # "nan"/"inf" parse but are not values (NaN already means missing), and an overflow to
    # inf would be silent.
    nonfinite = pc.invert(pc.fill_null(pc.is_finite(vals), True))
    if pc.any(nonfinite).as_py():
        nonfinite_np = _np_mask(nonfinite)
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


def _label01(col: pa.Array) -> tuple[pa.Array, pa.Array]:
    ok = pc.is_in(col, value_set=_LABELS01)
    return ok, pc.cast(pc.equal(col, "1"), pa.int8())


def _row_ids(file_index: int, lines: np.ndarray) -> pa.Array:
    return pa.array((np.int64(file_index) << LINE_BITS) | lines.astype(np.int64), type=pa.int64())


def _assemble(schema: LogSchema, columns: dict[str, pa.Array], keep: np.ndarray | None) -> pa.Table:
    target = schema.arrow_schema()
    arrays = [columns[name] for name in target.names]
    table = pa.Table.from_arrays(arrays, schema=target)
    if keep is not None and not keep.all():
        table = table.filter(pa.array(keep))
    return table


# ------------------------------------------------------------------------ formats


class _Criteo:
    def __init__(self, path: str, fmt: str, file_index: int, tally: RejectTally, header: str,
                 num_fields: int | None) -> None:
        self.path, self.file_index, self.tally = path, file_index, tally
        self.schema = schema_for("criteo")
        self.layout = _Layout("\t", CRITEO_COLUMNS, lambda fields: fields[0] == "label")

    def convert(self, batch: pa.RecordBatch, lines: np.ndarray, stream: _TextStream) -> pa.Table:
        rej = _Rejects(batch.num_rows)
        ok, label = _label01(batch.column("label"))
        rej.flag(pc.invert(ok), BAD_LABEL)
        cols: dict[str, pa.Array] = {ROW_ID: _row_ids(self.file_index, lines), LABEL: label}
        for name in CRITEO_DENSE:
            vals, bad = _to_float(batch.column(name), pa.float32())
            if bad is not None:
                rej.flag(bad, NON_NUMERIC_DENSE, f"non-numeric dense value in {name}")
            cols[name] = pc.fill_null(vals, np.float32("nan"))
        for name in CRITEO_CATEGORICAL:
            cols[name] = batch.column(name)
        rej.record(self.tally, self.path, lines, _row_text(batch, "\t"))
        return _assemble(self.schema, cols, ~rej.bad)


class _Avazu:
    def __init__(self, path: str, fmt: str, file_index: int, tally: RejectTally, header: str,
                 num_fields: int | None) -> None:
        self.path, self.file_index, self.tally = path, file_index, tally
        self.schema = schema_for("avazu")
        self.layout = _Layout(",", AVAZU_COLUMNS, lambda fields: len(fields) > 1 and fields[1] == "click")
        self._header_checked = False

    def _check_header(self, stream: _TextStream) -> None:
        self._header_checked = True
        if stream.header is None or tuple(stream.header) == AVAZU_COLUMNS:
            return
        wrong = [f"column {i + 1} is {got!r}, expected {want!r}"
                 for i, (got, want) in enumerate(zip(stream.header, AVAZU_COLUMNS)) if got != want]
        raise DataError(f"{self.path} line 1: Avazu header does not match the expected columns "
                        f"({'; '.join(wrong[:5])}); expected {','.join(AVAZU_COLUMNS)}")

    def convert(self, batch: pa.RecordBatch, lines: np.ndarray, stream: _TextStream) -> pa.Table:
        if not self._header_checked:
            self._check_header(stream)
        rej = _Rejects(batch.num_rows)
        ok, label = _label01(batch.column("click"))
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
        cols: dict[str, pa.Array] = {ROW_ID: _row_ids(self.file_index, lines), LABEL: label,
                                     TS: pc.cast(stamp, pa.int64())}
        for name in _AVAZU_RAW_CATEGORICAL:
            cols[name] = batch.column(name)
        cols["hour_of_day"] = pc.utf8_slice_codeunits(hour, 6, 8)
        cols["weekday"] = pc.cast(pc.day_of_week(stamp), pa.string())  # 0 = Monday
        rej.record(self.tally, self.path, lines, _row_text(batch, ","))
        return _assemble(self.schema, cols, ~rej.bad)


class _MovieLens:
    def __init__(self, path: str, fmt: str, file_index: int, tally: RejectTally, header: str,
                 num_fields: int | None) -> None:
        self.path, self.file_index, self.tally = path, file_index, tally
        self.specs = side.find_side_files(path)
        self.schema = movielens_schema(side.side_columns(self.specs))
        # Loaded once per file (a read task), joined onto every block.
        self.sides = side.load_side_tables(self.specs)
        # u.data has no header; RecBole's .inter starts with `user_id:token\titem_id:token...`.
        self.layout = _Layout("\t", None, self._looks_like_header)
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

    def _resolve_columns(self, batch: pa.RecordBatch, stream: _TextStream) -> tuple[int, ...]:
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

    def convert(self, batch: pa.RecordBatch, lines: np.ndarray, stream: _TextStream) -> pa.Table:
        if self._positions is None:
            self._positions = self._resolve_columns(batch, stream)
        user, item, rating_s, ts_s = (batch.column(i) for i in self._positions)
        rej = _Rejects(batch.num_rows)
        # _to_float nulls out what it cannot parse, so null = missing or non-numeric here.
        rating, _ = _to_float(rating_s, pa.float64())
        rej.flag(pc.is_null(rating), NON_NUMERIC_RATING, "non-numeric rating")
        ts_f, _ = _to_float(ts_s, pa.float64())
        in_range = pc.and_kleene(pc.greater_equal(ts_f, 0.0), pc.less(ts_f, MAX_TS))
        rej.flag(pc.invert(pc.fill_null(in_range, False)), BAD_TIMESTAMP, "bad timestamp (expected unix seconds)")
        # Rejected rows still go through the int64 cast below (they are filtered after), so
        # their values are zeroed first: one out-of-range value would fail the whole block.
        ts_f = pc.if_else(pc.fill_null(in_range, False), ts_f, 0.0)
        label = pc.cast(pc.fill_null(pc.greater_equal(rating, MOVIELENS_POSITIVE_RATING), False), pa.int8())
        cols = {ROW_ID: _row_ids(self.file_index, lines), LABEL: label, "user_id": user, "item_id": item,
                TS: pc.cast(pc.floor(pc.fill_null(ts_f, 0.0)), pa.int64())}
        for key, table in self.sides:
            cols.update(zip(table.spec.columns, table.join(cols[key])))
        rej.record(self.tally, self.path, lines, _row_text(batch, "\t"))
        return _assemble(self.schema, cols, ~rej.bad)


class _LibSVM:
    """One-hot libSVM lines, ``k`` features each (``k`` fixed before reading: ``_peek_libsvm_fields``).

    Fast path (``plain``, when the file's first valid line is ``label index:1 index:1...``
    with single spaces): the CSV reader splits on spaces into ``label, f0..f{k-1}``, and rows
    whose tokens are all plain ``index:1`` are converted column-wise. Every other line (tabs,
    repeated or trailing spaces, ``index:1.0``, another field count, bad tokens) goes through
    ``_parse_lines``, which splits on any whitespace and decides accept or reject, so both
    paths give the same result for the same line. Files in another style (e.g. trailing
    spaces) are read one line per row straight into ``_parse_lines``, so that the CSV
    handler is not called from Python for every line.
    """

    def __init__(self, path: str, fmt: str, file_index: int, tally: RejectTally, header: str,
                 num_fields: int | None, plain: bool = True) -> None:
        if num_fields is None or num_fields < 1:
            raise DataError(f"{path}: libsvm needs a field count of at least 1, got {num_fields!r}")
        self.path, self.file_index, self.tally, self.k = path, file_index, tally, num_fields
        self.schema = schema_for("libsvm", num_fields)
        self.plain = plain
        # \x1f (unit separator) does not occur in libSVM text: one column per line.
        columns = ("label", *self.schema.categorical) if plain else ("line",)
        self.layout = _Layout(" " if plain else "\x1f", columns, lambda fields: False,
                              nulls=False, defer_invalid=True)

    def convert(self, batch: pa.RecordBatch, lines: np.ndarray, stream: _TextStream) -> pa.Table | None:
        if not self.plain:
            deferred_lines, deferred_texts = stream.take_deferred()
            self.tally.seen(-batch.num_rows)  # _parse_lines counts them again
            raw = pa.concat_arrays([batch.column(0), pa.array(deferred_texts, type=pa.string())])
            all_lines = np.concatenate([lines, np.asarray(deferred_lines, dtype=np.int64)])
            if deferred_lines:
                order = np.argsort(all_lines, kind="stable")
                raw, all_lines = raw.take(pa.array(order)), all_lines[order]
            return self._parse_lines(raw, all_lines)
        label = batch.column(0)
        ok = pc.is_in(label, value_set=pa.array(LIBSVM_LABELS))
        idx = []
        for col in batch.columns[1:]:
            i = pc.utf8_slice_codeunits(col, 0, -2)
            ok = pc.and_kleene(ok, pc.and_kleene(pc.ends_with(col, ":1"), pc.ascii_is_decimal(i)))
            idx.append(i)
        ok_np = _np_mask(ok)
        parts = []
        if ok_np.any():
            keep = None if ok_np.all() else pa.array(ok_np)
            cols: dict[str, pa.Array] = {
                ROW_ID: _row_ids(self.file_index, lines[ok_np]),
                LABEL: pc.cast(pc.is_in(label if keep is None else label.filter(keep),
                                        value_set=pa.array(LIBSVM_POSITIVE)), pa.int8())}
            for name, i in zip(self.schema.categorical, idx):
                cols[name] = i if keep is None else i.filter(keep)
            parts.append(_assemble(self.schema, cols, None))
        slow_texts: list[pa.Array] = []
        slow_lines = [np.zeros(0, dtype=np.int64)]
        if not ok_np.all():
            slow = pa.array(~ok_np)
            slow_texts.append(pc.binary_join_element_wise(*(c.filter(slow) for c in batch.columns), " "))
            slow_lines.append(lines[~ok_np])
            self.tally.seen(-len(slow_lines[-1]))  # _parse_lines counts them again
        deferred_lines, deferred_texts = stream.take_deferred()
        if deferred_lines:
            slow_texts.append(pa.array(deferred_texts, type=pa.string()))
            slow_lines.append(np.asarray(deferred_lines, dtype=np.int64))
        if slow_texts:
            table = self._parse_lines(pa.concat_arrays(slow_texts), np.concatenate(slow_lines))
            if table is not None:
                parts.append(table)
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return pa.concat_tables(parts).sort_by(ROW_ID)

    def _parse_lines(self, raw: pa.Array, lines: np.ndarray) -> pa.Table | None:
        """The general path: split on any whitespace, count blank lines, reject bad lines."""
        text = pc.utf8_trim_whitespace(raw)
        blank = _np_mask(pc.equal(pc.utf8_length(text), 0))
        if blank.any():
            self.tally.blank(int(blank.sum()))
            keep = pa.array(~blank)
            raw, text, lines = raw.filter(keep), text.filter(keep), lines[~blank]
        n = len(text)
        self.tally.seen(n)
        if n == 0:
            return None
        toks = pc.ascii_split_whitespace(text)
        counts = pc.list_value_length(toks).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(toks)
        parent = np.repeat(np.arange(n), counts)  # row of each token
        is_label = np.zeros(len(flat), dtype=bool)
        is_label[np.cumsum(counts) - counts] = True  # every row has >= 1 token: blanks are gone
        label_s = pc.list_element(toks, 0)
        tok_ok = _np_mask(pc.match_substring_regex(flat, LIBSVM_TOKEN_RE)) | is_label
        row_tok_ok = np.ones(n, dtype=bool)
        row_tok_ok[parent[~tok_ok]] = False
        rej = _Rejects(n)
        rej.flag(~row_tok_ok, BAD_LIBSVM_TOKEN, "bad libsvm token (expected index:1)")
        rej.flag(pc.invert(pc.is_in(label_s, value_set=pa.array(LIBSVM_LABELS))), BAD_LABEL,
                 "label not in {0,1,-1,+1}")
        got = counts - 1
        for m in np.unique(got[(got != self.k) & ~rej.bad]):
            rej.flag(got == m, WRONG_FIELD_COUNT, f"wrong number of fields (expected {self.k}, got {m})")
        rej.record(self.tally, self.path, lines, lambda i: raw[i].as_py())
        keep = ~rej.bad
        m = int(keep.sum())
        if m == 0:
            return None
        # Surviving rows all hold 1 + k tokens, so their features tile a (rows, k) grid.
        feat = flat.filter(pa.array(keep[parent] & ~is_label))
        idx = pc.list_element(pc.split_pattern(feat, ":", max_splits=1), 0)
        cols: dict[str, pa.Array] = {
            ROW_ID: _row_ids(self.file_index, lines[keep]),
            LABEL: pc.cast(pc.is_in(label_s.filter(pa.array(keep)), value_set=pa.array(LIBSVM_POSITIVE)),
                           pa.int8())}
        for j, name in enumerate(self.schema.categorical):
            cols[name] = idx.take(pa.array(np.arange(j, m * self.k, self.k, dtype=np.int64)))
        return _assemble(self.schema, cols, None)


def _first_libsvm_line(lines: list[bytes]) -> tuple[int, bool] | None:
    """(feature count, plain style?) of the first valid libSVM line (the checks of ``_LibSVM``)."""
    token = re.compile(LIBSVM_TOKEN_RE)
    for i, raw in enumerate(lines):
        line = raw.decode("utf-8", errors="replace")
        if i == 0:
            line = line.removeprefix("\ufeff")  # a byte order mark, which the CSV reader skips too
        parts = line.split(None)
        if len(parts) >= 2 and parts[0] in LIBSVM_LABELS and all(token.match(p) for p in parts[1:]):
            return len(parts) - 1, bool(_LIBSVM_PLAIN_LINE.match(line))
    return None


class _Prefixed:
    """A read-only stream: ``head`` bytes already taken from ``rest``, then the rest of it."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head, self._rest, self.closed = head, rest, False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            out, self._head = self._head + self._rest.read(), b""
            return out
        out, self._head = self._head[:n], self._head[n:]
        if len(out) < n:
            # Arrow takes a short read for end of file, so fill the request from the rest.
            out += self._rest.read(n - len(out))
        return out

    def close(self) -> None:
        self.closed = True


def _peek_libsvm(source: Any, path: str, head_bytes: int = LIBSVM_SNIFF_BYTES) -> tuple[int, bool, _Prefixed]:
    """(field count, plain style?, the stream again) from the file's first valid line."""
    head = source.read(head_bytes)
    if not head:
        raise empty_file_error(path, "libsvm")
    lines = head.splitlines()  # \n, \r\n and a lone \r, as the CSV reader splits
    if len(head) == head_bytes:
        lines = lines[:-1]  # possibly cut mid-line
    found = _first_libsvm_line(lines)
    if found is None:
        raise DataError(f"{path}: no valid libsvm line (`label idx:1 idx:1 ...`, label in {{0,1,-1,+1}}) "
                        f"in the first {len(head):,} bytes, so the number of fields is unknown")
    return found[0], found[1], _Prefixed(head, source)


_PARSERS: dict[str, type] = {"criteo": _Criteo, "avazu": _Avazu, "movielens": _MovieLens}


# ------------------------------------------------------------------------ parquet


def _iter_parquet(path: str, file_index: int, tally: RejectTally, f: Any,
                  schema: LogSchema | None, batch_rows: int = 65_536) -> Iterator[pa.Table]:
    if f is not None and not getattr(f, "seekable", lambda: False)():
        # Parquet needs random access; a plain input stream is read into memory once.
        f = pa.BufferReader(f.read())
    try:
        pfile = pq.ParquetFile(f if f is not None else path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot be read as parquet: {e}") from e
    log_schema = _parquet_schema(path, pfile.schema_arrow, schema)
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
        rej = _Rejects(n)
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
        valid = _np_mask(pc.is_valid(col))
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
