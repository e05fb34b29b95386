"""A large text log cut into byte ranges that each begin a line, so that several read tasks
(cores, nodes) parse one file at once.

One read task per file leaves a cluster with one core parsing a 6 GB Avazu or a 45 GB
Criteo file while the rest wait. A range must still give every row the id and the line
number a whole-file read gives it (``row_id = file << 40 | line``), so each range carries
the number of lines before it. A planning pass, one small task per range, finds where the
range really begins (after the first ``\\n`` at or past its nominal cut) and counts its
line breaks as Arrow counts them (``\\n``, ``\\r\\n`` and a lone ``\\r``); the driver adds
up one integer per range. A range always begins right after a ``\\n``, so a ``\\r\\n`` is
never cut in two. A file with no ``\\n`` at all (``\\r`` endings only) stays one range.

Compressed files cannot be entered in the middle and are read whole (``plan_file``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from recdistill.data.formats.text import COMPRESSED_SUFFIXES

_CHUNK = 8 << 20  # bytes per read while counting line breaks
_SCAN = 64 << 10  # bytes per read while looking for the next line start


@dataclass(frozen=True)
class Piece:
    """What one read task reads: a whole file, or the byte range [start, end) of it."""

    path: str
    start: int = 0
    end: int = -1  # -1: to the end (a whole file)
    line_offset: int = 0  # lines of the file before ``start``
    part: int = 0
    parts: int = 1

    @property
    def whole(self) -> bool:
        return self.parts == 1

    @property
    def nbytes(self) -> int:
        return (self.end if self.end >= 0 else os.path.getsize(self.path)) - self.start

    def label(self) -> str:
        """How a message names it: the file, and for a range its bytes and first line."""
        if self.whole:
            return self.path
        return (f"{self.path} (range {self.part + 1} of {self.parts}: bytes {self.start:,}-{self.end:,}, "
                f"from line {self.line_offset + 1:,})")


def line_start(f: Any, pos: int, size: int) -> int:
    """The first offset at or after ``pos`` where a line begins (``size`` if none does):
    ``pos`` itself when the byte before it is ``\\n``, else the byte after the next ``\\n``."""
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    f.seek(pos - 1)
    at = pos - 1
    while True:
        chunk = f.read(_SCAN)
        if not chunk:
            return size
        i = chunk.find(b"\n")
        if i >= 0:
            return at + i + 1
        at += len(chunk)


def count_breaks(f: Any, start: int, end: int) -> int:
    """Line breaks in bytes [start, end), counted as Arrow counts lines: ``\\n``, ``\\r\\n``
    and a lone ``\\r`` end one each (a ``\\r\\n`` across two reads is still one)."""
    f.seek(start)
    left, n, after_cr = end - start, 0, False
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
        n += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
        if after_cr and chunk[:1] == b"\n":
            n -= 1  # the \r ending the previous read was the first half of this \r\n
        after_cr = chunk[-1:] == b"\r"
    return n


def survey_range(path: str, lo: int, hi: int) -> tuple[int, int, int]:
    """(start, end, line breaks) of the range whose nominal cuts are [lo, hi): both cuts moved
    to the next line start, so that neighbours share their boundary exactly."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        start, end = line_start(f, lo, size), line_start(f, hi, size)
        return start, end, count_breaks(f, start, end) if end > start else 0


def splittable(path: str, fmt: str, split_bytes: int) -> bool:
    from recdistill.data.formats import SPLIT_FORMATS

    return (split_bytes > 0 and fmt in SPLIT_FORMATS and not path.lower().endswith(COMPRESSED_SUFFIXES)
            and os.path.getsize(path) > split_bytes)


def plan_file(path: str, fmt: str, split_bytes: int,
              survey: Callable[[Sequence[tuple[str, int, int]]], list[tuple[int, int, int]]] | None = None
              ) -> list[Piece]:
    """The pieces of one file: itself when it is small, compressed or of a format read whole,
    else ranges of about ``split_bytes`` each, with the lines before each. ``survey`` maps
    ``survey_range`` over the nominal ranges (Ray tasks, see ``datasource``); by default here."""
    if not splittable(path, fmt, split_bytes):
        return [Piece(path)]
    size = os.path.getsize(path)
    n = -(-size // split_bytes)
    cuts = [size * k // n for k in range(n + 1)]
    nominal = [(path, cuts[k], cuts[k + 1]) for k in range(n)]
    found = survey(nominal) if survey is not None else [survey_range(*r) for r in nominal]
    ranges, before = [], 0
    for start, end, breaks in found:
        if end > start:  # a line longer than a range leaves the next ones empty
            ranges.append((start, end, before))
        before += breaks
    if len(ranges) <= 1:
        return [Piece(path)]
    return [Piece(path, s, e, lines, i, len(ranges)) for i, (s, e, lines) in enumerate(ranges)]


def iter_piece(piece: Piece, fmt: str, file_index: int, tally: Any, header: str = "auto",
               num_fields: int | None = None) -> Iterator[Any]:
    """``formats.iter_file`` over one piece: a whole file as usual, a range through a bounded
    stream with its line offset (rows and rejects keep the file's line numbers)."""
    from recdistill.data import formats

    if piece.whole:
        yield from formats.iter_file(piece.path, fmt, file_index, tally, header, num_fields=num_fields)
        return
    with open(piece.path, "rb") as f:
        f.seek(piece.start)
        yield from formats.iter_file(piece.path, fmt, file_index, tally, header, Bounded(f, piece.end - piece.start),
                                     num_fields=num_fields, line_offset=piece.line_offset, partial=True)


class Bounded:
    """A read-only stream of ``n`` bytes of an open binary file, from where it stands."""

    def __init__(self, f: Any, n: int) -> None:
        self._f, self._left = f, n
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._f.read(want) if want > 0 else b""
        self._left -= len(data)
        return data

    def close(self) -> None:
        self.closed = True
