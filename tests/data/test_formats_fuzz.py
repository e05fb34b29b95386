"""Property tests of the readers: generated files, valid and malformed, against an oracle.

The oracle re-derives each line's verdict from the documented rules alone (README "Real
logs" and the ``formats`` module docstring), not from the reader's code: every valid row is
kept with its line number and values, every invalid row is counted under the first rule it
breaks, blank lines are counted apart, the counts add up, and nothing else escapes. Files
are read with ``formats.iter_file`` (pure pyarrow, no Ray) and small blocks, so that block
boundaries fall between and across the rule paths. Derandomized and bounded: the module
runs in a few seconds.
"""

from __future__ import annotations

import calendar
import math
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recdistill.data import formats
from recdistill.data.formats.parquet import iter_parquet
from recdistill.data.rejects import DataError, RejectTally
from recdistill.data.schema import LogSchema

EXAMPLES = 120
# One bug shrunk, not each: shrinking several at once ran past the test timeout.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                report_multiple_bugs=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")  # README: a decimal number
TOKEN = re.compile(r"^[0-9]+:1(\.0*)?$")
BAD_UTF8 = "\udcff"  # written with surrogateescape: the byte 0xFF, never valid UTF-8

Verdict = tuple[str, object]  # ("keep", values) | ("reject", reason) | ("blank", None)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


# ------------------------------------------------------------------ file assembly

ENDINGS = st.sampled_from(["\n", "\r\n", "\r"])


def write_lines(path: Path, lines: list[str], ending: str, bom: bool) -> None:
    text = ("\ufeff" if bom else "") + ending.join(lines) + ending
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


def read_all(path: Path, fmt: str, block_size: int, **kw) -> tuple[pa.Table | None, RejectTally]:
    tally = RejectTally()
    tables = list(formats.iter_file(str(path), fmt, 0, tally, block_size=block_size, **kw))
    return (pa.concat_tables(tables) if tables else None), tally


def check(table: pa.Table | None, tally: RejectTally, verdicts: list[Verdict],
          row_values: Callable[[pa.Table], list]) -> None:
    """The reader's result equals the oracle's, line by line, and the counts add up."""
    kept = [(i + 1, v[1]) for i, v in enumerate(verdicts) if v[0] == "keep"]
    reasons: dict[str, int] = {}
    for v in verdicts:
        if v[0] == "reject":
            reasons[str(v[1])] = reasons.get(str(v[1]), 0) + 1
    got_ids = [] if table is None else table["row_id"].to_pylist()
    assert got_ids == [line for line, _ in kept]
    if table is not None:
        assert row_values(table) == [values for _, values in kept]
    assert tally.counts == reasons
    assert tally.blank_lines == sum(v[0] == "blank" for v in verdicts)
    assert tally.total == len(kept) + tally.rejected == sum(v[0] != "blank" for v in verdicts)
    for reason, examples in tally.examples.items():
        assert all(verdicts[e[1] - 1] == ("reject", reason) for e in examples)


def utf8_ok(line: str) -> bool:
    return BAD_UTF8 not in line


def number(v: str) -> float | None:
    """The documented numeric rule: a decimal number that is finite; None when it is not one."""
    if not NUMBER.match(v):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


# Field values: mostly valid, some at the edges of each rule.
DENSE = st.one_of(st.integers(-10**6, 10**6).map(str), st.sampled_from(
    ["", "", "0.5", "-3", "+2", ".25", "1e3", "2.5E-2", "7.", "abc", "nan", "inf", "-inf", "1e39",
     "1,5", "--1", "1e", "0x10", " 4", "١"]))
CATEGORY = st.text(alphabet="abc09 \"'é€-_", max_size=6)
LABEL01 = st.sampled_from(["0", "1", "0", "1", "2", "", "x", "-1", "1.0"])


def with_bad_bytes(line: str, where: int) -> str:
    where = where % (len(line) + 1)
    return line[:where] + BAD_UTF8 + line[where:]


# ------------------------------------------------------------------------- criteo


@st.composite
def criteo_line(draw) -> str:
    kind = draw(st.sampled_from(["ok", "ok", "ok", "mutated", "fields", "blank", "utf8", "nulls"]))
    if kind == "blank":
        return ""
    if kind == "nulls":
        return "\t" * 39  # 40 empty fields: a blank line
    dense = [draw(st.integers(0, 999).map(str)) if kind != "mutated" else draw(DENSE) for _ in range(13)]
    label = draw(LABEL01) if kind == "mutated" else draw(st.sampled_from(["0", "1"]))
    cats = [draw(st.sampled_from(["", "68fd1e64", "a"])) for _ in range(26)]
    fields = [label, *dense, *cats]
    if kind == "fields":
        n = draw(st.sampled_from([1, 39, 41]))
        fields = (fields + ["x"])[:n]
    line = "\t".join(fields)
    return with_bad_bytes(line, draw(st.integers(0, 400))) if kind == "utf8" else line


def criteo_verdict(line: str) -> Verdict:
    if not utf8_ok(line):
        return ("reject", "invalid UTF-8")
    fields = line.split("\t")
    if line == "" or (len(fields) == 40 and all(f == "" for f in fields)):
        return ("blank", None)
    if len(fields) != 40:
        return ("reject", "wrong field count")
    if fields[0] not in ("0", "1"):
        return ("reject", "label not in {0,1}")
    dense = []
    for v in fields[1:14]:
        x = float("nan") if v == "" else number(v)
        if x is None or (v != "" and abs(x) > float(np.finfo(np.float32).max)):  # inf as float32
            return ("reject", "non-numeric dense value")
        dense.append(None if v == "" else float(np.float32(x)))
    return ("keep", (int(fields[0]), dense, [f or None for f in fields[14:]]))


def criteo_values(t: pa.Table) -> list:
    dense = [[None if math.isnan(x) else x for x in t[f"I{i}"].to_pylist()] for i in range(1, 14)]
    cats = [t[f"C{i}"].to_pylist() for i in range(1, 27)]
    return [(t["label"][r].as_py(), [d[r] for d in dense], [c[r] for c in cats]) for r in range(t.num_rows)]


@FUZZ
@given(lines=st.lists(criteo_line(), min_size=1, max_size=25), ending=ENDINGS, bom=st.booleans(),
       block=st.integers(900, 4000))
def test_criteo_fuzz(workdir, lines, ending, bom, block):
    p = workdir / "c.txt"
    write_lines(p, lines, ending, bom)
    verdicts = [criteo_verdict(line) for line in lines]
    if all(v[0] == "blank" for v in verdicts):
        with pytest.raises(DataError, match="is empty, expected criteo rows"):
            read_all(p, "criteo", block)
        return
    check(*read_all(p, "criteo", block), verdicts, criteo_values)


# -------------------------------------------------------------------------- avazu

HOURS = st.one_of(
    st.builds(lambda y, m, d, h: f"{y:02d}{m:02d}{d:02d}{h:02d}", st.integers(0, 99), st.integers(0, 13),
              st.integers(0, 32), st.integers(0, 25)),
    st.sampled_from(["", "1410210", "141021000", "14-10-21", "16022900", "14022900", "14023100"]))


@st.composite
def avazu_line(draw) -> str:
    kind = draw(st.sampled_from(["ok", "ok", "hour", "click", "fields", "blank", "utf8"]))
    if kind == "blank":
        return draw(st.sampled_from(["", "," * 23]))
    click = draw(LABEL01) if kind == "click" else draw(st.sampled_from(["0", "1"]))
    hour = draw(HOURS) if kind in ("hour", "utf8") else draw(st.sampled_from(["14102100", "14103123", "16022913"]))
    fields = [draw(st.sampled_from(["1000", "", "9e3"])), click, hour,
              *[draw(CATEGORY) for _ in range(21)]]
    if kind == "fields":
        fields = fields[: draw(st.sampled_from([3, 23]))] if draw(st.booleans()) else fields + ["x"]
    line = ",".join(fields)
    return with_bad_bytes(line, draw(st.integers(0, 200))) if kind == "utf8" else line


def avazu_verdict(line: str) -> Verdict:
    if not utf8_ok(line):
        return ("reject", "invalid UTF-8")
    fields = line.split(",")
    if line == "" or (len(fields) == 24 and all(f == "" for f in fields)):
        return ("blank", None)
    if len(fields) != 24:
        return ("reject", "wrong field count")
    if fields[1] not in ("0", "1"):
        return ("reject", "label not in {0,1}")
    hour = fields[2]
    try:
        when = datetime.strptime(hour, "%y%m%d%H") if re.fullmatch(r"[0-9]{8}", hour) else None
    except ValueError:
        when = None
    if when is None:
        return ("reject", "bad timestamp")
    cats = [f or None for f in fields[3:]]
    return ("keep", (int(fields[1]), calendar.timegm(when.timetuple()), *cats, hour[6:8], str(when.weekday())))


def avazu_values(t: pa.Table) -> list:
    cols = ["label", "ts", *formats.AVAZU_CATEGORICAL]
    data = [t[c].to_pylist() for c in cols]
    return [tuple(col[r] for col in data) for r in range(t.num_rows)]


@FUZZ
@given(first=st.sampled_from(["header", "data"]), lines=st.lists(avazu_line(), min_size=1, max_size=25),
       ending=ENDINGS, bom=st.booleans(), block=st.integers(300, 3000))
def test_avazu_fuzz(workdir, first, lines, ending, bom, block):
    # Line 1 decides whether there is a header, so it is either the header or a valid row.
    head = ",".join(formats.AVAZU_COLUMNS) if first == "header" else "1,0,14102100" + ",a" * 21
    p = workdir / "a.csv"
    write_lines(p, [head, *lines], ending, bom)
    verdicts = [("header", None) if first == "header" else avazu_verdict(head)]
    verdicts += [avazu_verdict(line) for line in lines]
    if not any(v[0] in ("keep", "reject") for v in verdicts):
        with pytest.raises(DataError, match="is empty, expected avazu rows"):
            read_all(p, "avazu", block)
        return
    table, tally = read_all(p, "avazu", block)
    if first == "header":
        verdicts[0] = ("blank", None)  # neither kept nor rejected: line 2 is the first row
        tally.blank_lines += 1
    check(table, tally, verdicts, avazu_values)


# ---------------------------------------------------------------------- movielens

RATINGS = st.one_of(st.sampled_from(["1", "3", "4", "5", "4.5", "3.99", "", "good", "nan", "inf", "1e400"]),
                    st.floats(-10, 10, allow_nan=False).map(repr))
TIMESTAMPS = st.one_of(st.integers(0, 2**40).map(str), st.sampled_from(
    ["", "-5", "-0", "yesterday", "881250949.7", "9223372036854775808", "9223372036854775807",
     "9223372036854774784", "1e30", "inf", "nan", "1e19"]))


@st.composite
def movielens_line(draw) -> str:
    kind = draw(st.sampled_from(["ok", "ok", "mutated", "fields", "blank", "utf8"]))
    if kind == "blank":
        return draw(st.sampled_from(["", "\t\t\t"]))
    user, item = draw(st.integers(0, 999).map(str)), draw(st.sampled_from(["242", "", "x:y"]))
    rating = draw(RATINGS) if kind in ("mutated", "utf8") else draw(st.sampled_from(["1", "4", "5"]))
    ts = draw(TIMESTAMPS) if kind in ("mutated", "utf8") else draw(st.integers(0, 2**31).map(str))
    fields = [user, item, rating, ts]
    if kind == "fields":
        fields = fields[: draw(st.integers(1, 3))] if draw(st.booleans()) else fields + ["x"]
    line = "\t".join(fields)
    return with_bad_bytes(line, draw(st.integers(0, 60))) if kind == "utf8" else line


def movielens_verdict(line: str) -> Verdict:
    if not utf8_ok(line):
        return ("reject", "invalid UTF-8")
    fields = line.split("\t")
    if line == "" or (len(fields) == 4 and all(f == "" for f in fields)):
        return ("blank", None)
    if len(fields) != 4:
        return ("reject", "wrong field count")
    rating = number(fields[2])
    if rating is None:
        return ("reject", "non-numeric rating")
    ts = number(fields[3])
    if ts is None or not 0 <= ts < 2.0**63:
        return ("reject", "bad timestamp")
    return ("keep", (int(rating >= 4), fields[0] or None, fields[1] or None, math.floor(ts)))


def movielens_values(t: pa.Table) -> list:
    data = [t[c].to_pylist() for c in ("label", "user_id", "item_id", "ts")]
    return [tuple(col[r] for col in data) for r in range(t.num_rows)]


@FUZZ
@given(lines=st.lists(movielens_line(), min_size=0, max_size=25), ending=ENDINGS, bom=st.booleans(),
       block=st.integers(64, 2000))
def test_movielens_fuzz(workdir, lines, ending, bom, block):
    head = "196\t242\t3\t881250949"  # line 1 fixes the field count and says "no header"
    p = workdir / "u.data"
    write_lines(p, [head, *lines], ending, bom)
    verdicts = [movielens_verdict(line) for line in [head, *lines]]
    check(*read_all(p, "movielens", block), verdicts, movielens_values)


# ------------------------------------------------------------------------- libsvm

SPACE = st.sampled_from([" ", " ", " ", "\t", "  "])
LIBSVM_LABEL = st.sampled_from(["0", "1", "-1", "+1", "1", "0", "2", "-0", "x"])
TOKENS = st.one_of(st.integers(0, 99999).map(lambda i: f"{i}:1"), st.sampled_from(
    ["7:1.0", "7:1.", "7:2", "a:1", "7:", ":1", "7", "7:1x", "-7:1", "7:01"]))


@st.composite
def libsvm_line(draw, k: int) -> str:
    kind = draw(st.sampled_from(["ok", "ok", "ok", "spaced", "mutated", "count", "blank", "utf8"]))
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\t "]))
    n = draw(st.integers(0, k + 2)) if kind == "count" else k
    label = draw(LIBSVM_LABEL) if kind == "mutated" else draw(st.sampled_from(["0", "1", "-1", "+1"]))
    toks = [draw(TOKENS) if kind == "mutated" else f"{draw(st.integers(0, 9999))}:1" for _ in range(n)]
    if kind == "spaced":
        line = draw(st.sampled_from(["", " "])) + "".join(t + draw(SPACE) for t in [label, *toks])
    else:
        line = " ".join([label, *toks])
    return with_bad_bytes(line, draw(st.integers(0, 40))) if kind == "utf8" else line


def libsvm_verdict(line: str, k: int) -> Verdict:
    if not utf8_ok(line):
        return ("reject", "invalid UTF-8")
    parts = line.split()  # ASCII spaces and tabs only here
    if not parts:
        return ("blank", None)
    if not all(TOKEN.match(t) for t in parts[1:]):
        return ("reject", "bad libsvm token")
    if parts[0] not in ("0", "1", "-1", "+1"):
        return ("reject", "label not in {0,1}")
    if len(parts) - 1 != k:
        return ("reject", "wrong field count")
    return ("keep", (int(parts[0] in ("1", "+1")), *[t.split(":")[0] for t in parts[1:]]))


def libsvm_values(t: pa.Table) -> list:
    data = [t[c].to_pylist() for c in t.column_names[1:]]
    return [tuple(col[r] for col in data) for r in range(t.num_rows)]


@FUZZ
@given(data=st.data(), k=st.integers(1, 4), plain=st.booleans(), ending=ENDINGS, bom=st.booleans(),
       block=st.integers(64, 1500))
def test_libsvm_fuzz(workdir, data, k, plain, ending, bom, block):
    # Line 1 is valid and fixes k; in plain style the fast column path takes the plain lines.
    head = " ".join(["1", *(f"{i}:1" for i in range(k))]) + ("" if plain else " ")
    lines = data.draw(st.lists(libsvm_line(k), max_size=25))
    p = workdir / "x.fm.txt"
    write_lines(p, [head, *lines], ending, bom)
    verdicts = [libsvm_verdict(line, k) for line in [head, *lines]]
    check(*read_all(p, "libsvm", block), verdicts, libsvm_values)


# ------------------------------------------------------------------------ parquet

PQ_SCHEMA = LogSchema(dense=("d0", "d1"), categorical=("c0",), categorical_type="int64", has_ts=True,
                      source="synthetic")
DENSE_F = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([float("nan"), float("inf"), -float("inf"), None]))


@st.composite
def parquet_rows(draw) -> list[tuple]:
    n = draw(st.integers(1, 30))
    ids = draw(st.lists(st.one_of(st.integers(0, 60), st.none()), min_size=n, max_size=n)
               if draw(st.booleans()) else st.permutations(list(range(100, 100 + n))))
    return [(ids[i], draw(st.sampled_from([0, 1, 1, 0, 2, -1, None])), draw(DENSE_F), draw(DENSE_F),
             draw(st.integers(0, 9))) for i in range(n)]


def parquet_verdict(row: tuple) -> Verdict:
    row_id, label, d0, d1, c0 = row
    if row_id is None:
        return ("reject", "missing row_id")
    if label not in (0, 1):
        return ("reject", "label not in {0,1}")
    if any(d is not None and math.isinf(d) for d in (d0, d1)):
        return ("reject", "non-numeric dense value")
    return ("keep", (row_id, label, d0, d1, c0))


@FUZZ
@given(rows=parquet_rows(), batch=st.integers(1, 8))
def test_parquet_fuzz(workdir, rows, batch):
    p = workdir / "part.parquet"
    cols = list(zip(*rows))
    pq.write_table(pa.Table.from_arrays([
        pa.array(cols[0], pa.int64()), pa.array(cols[1], pa.int8()), pa.array(cols[2], pa.float32()),
        pa.array(cols[3], pa.float32()), pa.array(cols[4], pa.int64()), pa.array([1] * len(rows), pa.int64())],
        schema=PQ_SCHEMA.arrow_schema().set(1, pa.field("label", pa.int8()))
        .set(0, pa.field("row_id", pa.int64()))), p, row_group_size=batch)
    ids = [r[0] for r in rows if r[0] is not None]
    tally = RejectTally()
    if len(set(ids)) < len(ids):
        with pytest.raises(DataError, match=rf"{p}: row_id \d+ occurs more than once \(rows \d+ and \d+\)"):
            list(iter_parquet(str(p), tally, None, None, batch_rows=batch))
        return
    tables = list(iter_parquet(str(p), tally, None, None, batch_rows=batch))
    table = pa.concat_tables(tables) if tables else None
    verdicts = [parquet_verdict(r) for r in rows]
    f32 = lambda x: None if x is None else float(np.float32(x))  # noqa: E731

    def values(t: pa.Table) -> list:
        data = [t[c].to_pylist() for c in ("row_id", "label", "d0", "d1", "c0")]
        return [tuple(col[r] for col in data) for r in range(t.num_rows)]

    # Parquet rows are numbered 1.. in the file; the row_id column is its own key.
    kept = [(r[0], r[1], f32(r[2]), f32(r[3]), r[4]) for r, v in zip(rows, verdicts) if v[0] == "keep"]
    got = [] if table is None else values(table)
    same = lambda a, b: a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))  # noqa: E731
    assert len(got) == len(kept) and all(all(same(x, y) for x, y in zip(g, w)) for g, w in zip(got, kept))
    reasons: dict[str, int] = {}
    for v in verdicts:
        if v[0] == "reject":
            reasons[str(v[1])] = reasons.get(str(v[1]), 0) + 1
    assert tally.counts == reasons and tally.total == len(rows) == len(kept) + tally.rejected
    if ids:
        assert tally.id_ranges == {str(p): (min(ids), max(ids))}
