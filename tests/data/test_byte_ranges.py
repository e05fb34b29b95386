"""A large text file read as byte ranges (``data.byte_ranges``) gives what a read of the whole
file gives: the same rows with the same ids, the same rejects under the same line numbers,
the same blank lines. Pure Python here; ``test_datasource.py`` reads through Ray."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recdistill.data import formats
from recdistill.data.byte_ranges import Piece, count_breaks, iter_piece, line_start, plan_file
from recdistill.data.rejects import DataError, RejectTally

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DENSE = [str(i) for i in range(1, 14)]
CATS = [f"{i:08x}" for i in range(26)]
CRITEO = {
    "ok": "\t".join(["1", *DENSE, *CATS]),
    "ok0": "\t".join(["0", *DENSE[:5], "", *DENSE[6:], *CATS[:3], "", *CATS[4:]]),
    "label": "\t".join(["7", *DENSE, *CATS]),
    "dense": "\t".join(["0", "x1", *DENSE[1:], *CATS]),
    "fields": "\t".join(["1", *DENSE, *CATS[:20]]),
    "blank": "",
    "nulls": "\t" * 39,
    "utf8": "\t".join(["1", *DENSE, *CATS[:25], "ab\udcffcd"]),
    "header": "\t".join(formats.CRITEO_COLUMNS),
}
AVAZU = {
    "ok": ",".join(["7", "1", "14102100", "1005", "0", *(f"{i:x}" for i in range(19))]),
    "hour": ",".join(["8", "0", "14023100", "1005", "0", *(f"{i:x}" for i in range(19))]),
    "fields": ",".join(["9", "0", "14102100"]),
    "blank": "",
    "utf8": ",".join(["7", "1", "14102100", "10\udcff05", "0", *(f"{i:x}" for i in range(19))]),
}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def write(path: Path, lines: list[str], endings: list[str], bom: bool) -> None:
    text = ("\ufeff" if bom else "") + "".join(line + end for line, end in zip(lines, endings))
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


def read_whole(path: Path, fmt: str, header: str = "auto") -> tuple[pa.Table | None, RejectTally]:
    tally = RejectTally()
    return _concat(list(formats.iter_file(str(path), fmt, 3, tally, header))), tally


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    return pa.concat_tables(tables) if tables else None  # None: every row rejected


def read_pieces(pieces: list[Piece], fmt: str, header: str = "auto") -> tuple[pa.Table | None, RejectTally]:
    tables, total = [], RejectTally()
    for piece in pieces:
        tally = RejectTally()
        tables += iter_piece(piece, fmt, 3, tally, header)
        total.merge(tally)
    return _concat(tables), total


def rows(t: pa.Table | None) -> dict[str, list] | None:
    # NaN (a missing dense value) equals itself here
    return None if t is None else {k: ["nan" if v != v else v for v in col] for k, col in t.to_pydict().items()}


def same(a: tuple[pa.Table | None, RejectTally], b: tuple[pa.Table | None, RejectTally]) -> None:
    (ta, ra), (tb, rb) = a, b
    assert (ta is None) == (tb is None) and rows(ta) == rows(tb)  # rows, ids and values, in the file's order
    assert (ra.total, ra.counts, ra.blank_lines) == (rb.total, rb.counts, rb.blank_lines)
    assert ra.examples == rb.examples  # the same lines, numbered as the file numbers them


@FUZZ
@given(kinds=st.lists(st.sampled_from(sorted(CRITEO)), min_size=2, max_size=60),
       endings=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=60, max_size=60),
       bom=st.booleans(), split=st.integers(40, 3000))
def test_criteo_ranges_read_as_the_whole_file(workdir, kinds, endings, bom, split):
    # line 1 is the header or a row; every other line anything, each with its own line ending
    lines = [CRITEO["header" if kinds[0] == "header" else "ok"]] + [CRITEO[k] for k in kinds[1:] if k != "header"]
    path = workdir / "c.txt"
    write(path, lines, endings, bom)
    pieces = plan_file(str(path), "criteo", split)
    assert [(p.end if i + 1 < len(pieces) else None) for i, p in enumerate(pieces)] == \
        [(pieces[i + 1].start if i + 1 < len(pieces) else None) for i in range(len(pieces))]  # they tile the file
    try:
        whole = read_whole(path, "criteo")
    except DataError as e:
        assert "is empty" in str(e)
        return
    same(read_pieces(pieces, "criteo"), whole)


@FUZZ
@given(header=st.booleans(), kinds=st.lists(st.sampled_from(sorted(AVAZU)), min_size=1, max_size=60),
       endings=st.lists(st.sampled_from(["\n", "\r\n"]), min_size=61, max_size=61), split=st.integers(40, 3000))
def test_avazu_ranges_read_as_the_whole_file(workdir, header, kinds, endings, split):
    lines = [",".join(formats.AVAZU_COLUMNS) if header else AVAZU["ok"]] + [AVAZU[k] for k in kinds]
    path = workdir / "a.csv"
    write(path, lines, endings, False)
    try:
        whole = read_whole(path, "avazu")
    except DataError as e:
        assert "is empty" in str(e)
        return
    same(read_pieces(plan_file(str(path), "avazu", split), "avazu"), whole)


def test_ranges_begin_lines_and_count_breaks_as_arrow_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recdistill.data import byte_ranges

    data = b"aa\r\nbb\rcc\n\ndd"
    f = io.BytesIO(data)
    # every offset moves to the start of the next line that has a \n before it
    assert [line_start(f, p, len(data)) for p in range(len(data) + 1)] == \
        [0, 4, 4, 4, 4, 10, 10, 10, 10, 10, 10, 11, 13, 13]
    assert count_breaks(f, 0, len(data)) == 4  # \r\n, \r, \n, \n; the last line has no ending
    for chunk in (1, 2, 3, 5):  # a \r\n split between two reads is still one break
        monkeypatch.setattr(byte_ranges, "_CHUNK", chunk)
        assert count_breaks(f, 0, len(data)) == 4 and count_breaks(f, 4, 13) == 3, chunk
    path = tmp_path / "x.txt"
    path.write_bytes(b"1\t" * 39 + b"1\r")  # \r endings only: nowhere to cut, one piece
    path.write_bytes(path.read_bytes() * 50)
    assert plan_file(str(path), "criteo", 100) == [Piece(str(path))]


def test_which_files_are_cut(tmp_path: Path) -> None:
    row = ("\t".join(["1", *DENSE, *CATS]) + "\n").encode()
    plain = tmp_path / "c.txt"
    plain.write_bytes(row * 200)
    pieces = plan_file(str(plain), "criteo", 4096)
    assert len(pieces) == -(-len(row) * 200 // 4096) and pieces[0].start == 0 and pieces[-1].end == len(row) * 200
    assert all(p.start % len(row) == 0 and p.line_offset == p.start // len(row) for p in pieces)
    assert "range 2 of" in pieces[1].label() and f"from line {pieces[1].line_offset + 1:,}" in pieces[1].label()
    assert plan_file(str(plain), "criteo", 0) == [Piece(str(plain))]  # 0: never
    assert plan_file(str(plain), "criteo", len(row) * 200) == [Piece(str(plain))]  # not larger than a range
    import gzip

    packed = tmp_path / "c.txt.gz"
    packed.write_bytes(gzip.compress(row * 200, compresslevel=0))
    assert plan_file(str(packed), "criteo", 4096) == [Piece(str(packed))]  # cannot be entered midway
    lib = tmp_path / "l.txt"
    lib.write_bytes(b"1 3:1 7:1\n" * 2000)
    assert plan_file(str(lib), "libsvm", 4096) == [Piece(str(lib))]  # its layout is sniffed from line 1
    with pytest.raises(DataError, match="libsvm files are read whole"):
        list(formats.iter_file(str(lib), "libsvm", 0, RejectTally(), f=io.BytesIO(b"1 3:1\n"), partial=True))
