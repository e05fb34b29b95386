"""Parsers that stream one click-log file into the canonical layout (``data.schema``).

Pure pyarrow/numpy, no Ray: ``data.datasource`` wraps these for Ray Data, and tests and
tools can call them directly. This package holds the dispatch (``iter_file``, ``schema_for*``);
each format is one module (``criteo``, ``avazu``, ``movielens``, ``libsvm``, ``parquet``) on
shared pieces: ``text`` (the streaming text read), ``values`` (string -> number checks),
``rows`` (reject reasons and masks, row ids) and ``paths`` (which files a path names).
Every text format goes through one streaming path:

* ``pyarrow.csv.open_csv`` reads all columns as strings with ``use_threads=False``, so that
  the ``invalid_row_handler`` sees rows in order with their physical 1-based line number.
  Rows with the wrong number of fields are rejected there.
* Quoting is off: a physical line is always one row, so line numbers stay exact and a
  stray ``"`` is data rather than the start of a multi-line field.
* The physical line of every accepted row is recovered from the handler's line numbers
  (``text.TextStream``), so row ids stay true even after rejected or blank lines.
* Values are checked and converted with ``pyarrow.compute`` on whole columns; a row that
  fails a check is counted in the ``RejectTally`` under a reason and not yielded. Masks are
  combined with the Kleene forms (``and_kleene``/``or_kleene``): with the plain forms a null
  (missing value) poisons the result and the row lands under the wrong verdict.
* Bytes reach the CSV reader through ``text.Utf8Lines``: a line that is not valid UTF-8 is
  rejected as ``invalid UTF-8`` (Arrow would otherwise fail the whole file), and a read or
  decompression error (truncated .gz/.bz2/.zst) is a ``DataError`` naming the file.

Per-row rules (each failing row counted under the first reason, in this order):

* all text formats: a line with bytes that are not UTF-8 -> ``invalid UTF-8``; a line that
  holds nothing, or (criteo, avazu, movielens) only empty fields, is blank: counted apart,
  not a reject. A UTF-8 byte order mark at the start and ``\n``, ``\r\n`` or ``\r`` line
  endings are accepted.
* criteo: 40 tab-separated fields, else ``wrong field count``; label ``0``/``1``; each of
  I1..I13 empty (missing, NaN) or a decimal number (``values.NUMBER_RE``) that is finite as float32,
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

import os
from typing import Any, Iterator

import pyarrow as pa

from recdistill.data.formats.avazu import AVAZU_CATEGORICAL, AVAZU_COLUMNS, AVAZU_SCHEMA, AvazuParser
from recdistill.data.formats.criteo import CRITEO_COLUMNS, CRITEO_SCHEMA, CriteoParser
from recdistill.data.formats.libsvm import LibSVMParser, libsvm_schema, peek_libsvm, sniff_libsvm_fields
from recdistill.data.formats.movielens import (MovieLensParser, check_movielens_files, movielens_file_schema,
                                               movielens_schema)
from recdistill.data.formats.parquet import iter_parquet, parquet_file_schema
from recdistill.data.formats.paths import check_exists, expand_paths
from recdistill.data.formats.rows import MAX_FILES
from recdistill.data.formats.text import DEFAULT_BLOCK_SIZE, TextParser, Utf8Lines, iter_text
from recdistill.data.rejects import DataError, RejectTally, empty_file_error
from recdistill.data.schema import LogSchema

__all__ = ["AVAZU_CATEGORICAL", "AVAZU_COLUMNS", "CRITEO_COLUMNS", "DEFAULT_BLOCK_SIZE", "FORMATS", "HEADER_MODES",
           "SPLIT_FORMATS", "TEXT_FORMATS", "TIMED_SOURCES", "expand_paths", "iter_file", "schema_for", "schema_for_file", "schema_for_files"]

FORMATS = ("criteo", "avazu", "libsvm", "movielens", "parquet")
TEXT_FORMATS = ("criteo", "avazu", "libsvm", "movielens")
# Formats whose lines parse the same wherever a file is cut: fixed columns, and a header (if
# any) that only checks, never reorders. libsvm sniffs its layout and movielens reads its
# column order from line 1, so their files are read whole (one read task each).
SPLIT_FORMATS = ("criteo", "avazu")
# Sources whose rows always carry a time column (a Parquet log may or may not have one).
TIMED_SOURCES = ("synthetic", "avazu", "movielens")
HEADER_MODES = ("auto", "yes", "no")


def schema_for(fmt: str, num_fields: int | None = None) -> LogSchema:
    """The canonical schema of a text format (parquet files carry their own: ``schema_for_file``)."""
    _check_format(fmt)
    if fmt == "criteo":
        return CRITEO_SCHEMA
    if fmt == "avazu":
        return AVAZU_SCHEMA
    if fmt == "movielens":
        return movielens_schema()
    if fmt == "libsvm":
        if num_fields is None or num_fields < 1:
            raise DataError("libsvm: the number of fields depends on the file; pass num_fields "
                            "or use schema_for_file(path, 'libsvm')")
        return libsvm_schema(num_fields)
    raise DataError("parquet: the schema comes from the file's metadata; use schema_for_file(path, 'parquet')")


def schema_for_file(path: str, fmt: str, schema: LogSchema | None = None,
                    num_fields: int | None = None) -> LogSchema:
    """The schema ``iter_file`` will produce for ``path``; an explicit ``schema`` wins for parquet."""
    _check_format(fmt)
    check_exists(path)
    if fmt == "parquet":
        return parquet_file_schema(path, schema)
    if fmt == "libsvm":
        return schema_for(fmt, num_fields if num_fields is not None else sniff_libsvm_fields(path))
    if fmt == "movielens":
        return movielens_file_schema(path)
    return schema_for(fmt)


def schema_for_files(paths: list[str], fmt: str, schema: LogSchema | None = None,
                     num_fields: int | None = None) -> LogSchema:
    """The one schema of a read of ``paths``: the first file's (``schema_for_file``).

    MovieLens files must agree, since their side files decide their columns: a file that
    finds other side files than the first, or a side file listed as ratings (a dataset
    directory given as the path), is a ``DataError`` raised before any row is read.
    """
    if fmt == "movielens":
        check_movielens_files(paths)
    return schema_for_file(paths[0], fmt, schema=schema, num_fields=num_fields)


def iter_file(path: str, fmt: str, file_index: int, tally: RejectTally, header: str = "auto",
              f: Any = None, *, num_fields: int | None = None, schema: LogSchema | None = None,
              block_size: int = DEFAULT_BLOCK_SIZE, line_offset: int = 0,
              partial: bool = False) -> Iterator[pa.Table]:
    """Stream ``path`` as tables in the canonical layout; rejected rows go to ``tally``.

    ``f`` is an already opened pyarrow file (Ray hands one over); when None the file is
    opened here. ``num_fields`` fixes the libsvm field count (default: the first valid
    line's); ``schema`` is the LogSchema of a Parquet file without recdistill metadata, or
    (movielens) the one the read was planned with, which this file's side files must give.
    Raises DataError for a missing or empty file or a structural problem (bad header,
    missing column); per-row problems are only counted (the caller checks the budget).
    ``f`` may be a byte range of a text file that begins a line (``partial``), the file's
    ``line_offset`` lines before it: rows and rejects keep the file's line numbers.
    """
    _check_format(fmt)
    if header not in HEADER_MODES:
        raise DataError(f"header={header!r}: expected one of {', '.join(HEADER_MODES)}")
    if not 0 <= file_index < MAX_FILES:
        raise DataError(f"file_index {file_index} out of range [0, {MAX_FILES})")
    tally.add_file(path)
    if f is None:
        check_exists(path)
        if os.path.getsize(path) == 0:
            raise empty_file_error(path, fmt)
    if fmt == "parquet":
        yield from iter_parquet(path, tally, f, schema)
        return
    if partial and fmt not in SPLIT_FORMATS:
        raise DataError(f"{path}: {fmt} files are read whole (a byte range is readable for "
                        f"{', '.join(SPLIT_FORMATS)} only)")
    yield from iter_text(path, fmt, f, tally, header, block_size,
                         lambda source: _open_parser(source, fmt, path, file_index, tally, num_fields, schema),
                         line_offset=line_offset, partial=partial)


def _open_parser(source: Utf8Lines, fmt: str, path: str, file_index: int, tally: RejectTally,
                 num_fields: int | None, schema: LogSchema | None) -> tuple[TextParser, Any]:
    """The parser of a text format, with the stream it reads from (libsvm sniffs its field count first)."""
    if fmt == "libsvm":
        k, plain, rest = peek_libsvm(source, path)
        return LibSVMParser(path, file_index, tally, num_fields or k, plain), rest
    if fmt == "movielens":
        parser = MovieLensParser(path, file_index, tally)
        if schema is not None:
            parser.check_planned(schema)
        return parser, source
    if fmt == "criteo":
        return CriteoParser(path, file_index, tally), source
    return AvazuParser(path, file_index, tally), source


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DataError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
