"""One-hot libSVM: ``label index:1 index:1 ...``, a field count fixed per file (rules: ``formats``)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.data.formats.paths import check_exists
from recdistill.data.formats.rows import (BAD_LABEL, BAD_LIBSVM_TOKEN, WRONG_FIELD_COUNT, Rejects, assemble,
                                          np_mask, row_ids)
from recdistill.data.formats.text import Layout, TextStream, Utf8Lines
from recdistill.data.rejects import DataError, RejectTally, empty_file_error
from recdistill.data.schema import LABEL, ROW_ID, LogSchema

LIBSVM_SNIFF_BYTES = 4 << 20  # the first valid line, which fixes the field count, must lie in here
# One-hot libSVM: `index:1`. Another value would be a dense feature that a categorical
# field cannot hold, so it is rejected rather than dropped.
LIBSVM_TOKEN_RE = r"^[0-9]+:1(\.0*)?$"
# The common exact form, which the column-wise fast path takes.
_LIBSVM_PLAIN_LINE = re.compile(r"^(0|1|-1|\+1)( [0-9]+:1)+\r?$")
LIBSVM_LABELS = ("0", "1", "-1", "+1")
LIBSVM_POSITIVE = ("1", "+1")


def libsvm_schema(num_fields: int) -> LogSchema:
    return LogSchema(dense=(), categorical=tuple(f"f{i}" for i in range(num_fields)), source="libsvm")


def sniff_libsvm_fields(path: str) -> int:
    """Feature count of the first valid line (what ``iter_file`` fixes the file's field count to)."""
    check_exists(path)
    with pa.input_stream(path, compression="detect") as f:
        # through the same wrapper as the read itself: a damaged compressed file is a
        # DataError naming it here too, not a bare OSError
        k, _, _ = peek_libsvm(Utf8Lines(f, path, "libsvm"), path)
    return k


class LibSVMParser:
    """One-hot libSVM lines, ``k`` features each (``k`` fixed before reading: ``peek_libsvm``).

    Fast path (``plain``, when the file's first valid line is ``label index:1 index:1...``
    with single spaces): the CSV reader splits on spaces into ``label, f0..f{k-1}``, and rows
    whose tokens are all plain ``index:1`` are converted column-wise. Every other line (tabs,
    repeated or trailing spaces, ``index:1.0``, another field count, bad tokens) goes through
    ``_parse_lines``, which splits on any whitespace and decides accept or reject, so both
    paths give the same result for the same line. Files in another style (e.g. trailing
    spaces) are read one line per row straight into ``_parse_lines``, so that the CSV
    handler is not called from Python for every line.
    """

    def __init__(self, path: str, file_index: int, tally: RejectTally, num_fields: int | None,
                 plain: bool = True) -> None:
        if num_fields is None or num_fields < 1:
            raise DataError(f"{path}: libsvm needs a field count of at least 1, got {num_fields!r}")
        self.path, self.file_index, self.tally, self.k = path, file_index, tally, num_fields
        self.schema = libsvm_schema(num_fields)
        self.plain = plain
        # \x1f (unit separator) does not occur in libSVM text: one column per line.
        columns = ("label", *self.schema.categorical) if plain else ("line",)
        self.layout = Layout(" " if plain else "\x1f", columns, lambda fields: False,
                             nulls=False, defer_invalid=True)

    def convert(self, batch: pa.RecordBatch, lines: np.ndarray, stream: TextStream) -> pa.Table | None:
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
        ok_np = np_mask(ok)
        parts = []
        if ok_np.any():
            keep = None if ok_np.all() else pa.array(ok_np)
            cols: dict[str, pa.Array] = {
                ROW_ID: row_ids(self.file_index, lines[ok_np]),
                LABEL: pc.cast(pc.is_in(label if keep is None else label.filter(keep),
                                        value_set=pa.array(LIBSVM_POSITIVE)), pa.int8())}
            for name, i in zip(self.schema.categorical, idx):
                cols[name] = i if keep is None else i.filter(keep)
            parts.append(assemble(self.schema, cols, None))
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
        blank = np_mask(pc.equal(pc.utf8_length(text), 0))
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
        tok_ok = np_mask(pc.match_substring_regex(flat, LIBSVM_TOKEN_RE)) | is_label
        row_tok_ok = np.ones(n, dtype=bool)
        row_tok_ok[parent[~tok_ok]] = False
        rej = Rejects(n)
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
            ROW_ID: row_ids(self.file_index, lines[keep]),
            LABEL: pc.cast(pc.is_in(label_s.filter(pa.array(keep)), value_set=pa.array(LIBSVM_POSITIVE)),
                           pa.int8())}
        for j, name in enumerate(self.schema.categorical):
            cols[name] = idx.take(pa.array(np.arange(j, m * self.k, self.k, dtype=np.int64)))
        return assemble(self.schema, cols, None)


def _first_libsvm_line(lines: list[bytes]) -> tuple[int, bool] | None:
    """(feature count, plain style?) of the first valid libSVM line (the checks of ``LibSVMParser``)."""
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


def peek_libsvm(source: Any, path: str, head_bytes: int = LIBSVM_SNIFF_BYTES) -> tuple[int, bool, _Prefixed]:
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
