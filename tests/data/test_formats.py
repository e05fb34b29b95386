"""Tests of the single-file parsers in ``recdistill.data.formats`` and the reject tally."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recdistill.data import formats
from recdistill.data.formats import expand_paths, iter_file, schema_for, schema_for_file
from recdistill.data.formats.parquet import iter_parquet
from recdistill.data.rejects import DataError, RejectTally
from recdistill.data.schema import LogSchema

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LINE = 1 << 40


# ----------------------------------------------------------------------- helpers


def read(path: Path, fmt: str, file_index: int = 0, **kw) -> tuple[pa.Table, RejectTally]:
    tally = RejectTally()
    tables = list(iter_file(str(path), fmt, file_index, tally, **kw))
    schema = schema_for_file(str(path), fmt, num_fields=kw.get("num_fields"), schema=kw.get("schema"))
    table = pa.concat_tables(tables) if tables else schema.arrow_schema().empty_table()
    assert table.schema.equals(schema.arrow_schema(), check_metadata=True)
    return table, tally


def write(tmp_path: Path, name: str, lines: list[str], end: str = "\n") -> Path:
    p = tmp_path / name
    p.write_text(end.join(lines) + end)
    return p


def criteo_line(label: str = "0", dense: dict[int, str] | None = None, cats: dict[int, str] | None = None,
                fields: int = 40) -> str:
    d = [str(i * 10) for i in range(1, 14)]
    for i, v in (dense or {}).items():
        d[i - 1] = v
    c = [f"{i:08x}" for i in range(1, 27)]
    for i, v in (cats or {}).items():
        c[i - 1] = v
    return "\t".join([label, *d, *c][:fields])


AVAZU_HEADER = ",".join(formats.AVAZU_COLUMNS)


def avazu_line(click: str = "0", hour: str = "14102100", id_: str = "1000", device_ip: str = "ddd2926e") -> str:
    vals = [id_, click, hour, "1005", "0", "1fbe01fe", "f3845767", "28905ebd", "ecad2386", "7801e8d9",
            "07d7df22", "a99f214a", device_ip, "44956a24", "1", "2", "15706", "320", "50", "1722", "0",
            "35", "-1", "79"]
    return ",".join(vals)


def ids(table: pa.Table, file_index: int = 0) -> list[int]:
    return [r - (file_index << 40) for r in table["row_id"].to_pylist()]


# ------------------------------------------------------------------------ criteo


def test_criteo_happy_path(tmp_path):
    p = write(tmp_path, "day0.txt", [
        criteo_line("0"),
        criteo_line("1", dense={1: "", 2: "-3"}, cats={2: ""}),
        criteo_line("0", dense={13: "2.5"}),
    ])
    t, tally = read(p, "criteo", file_index=2)
    assert t["label"].to_pylist() == [0, 1, 0]
    assert t["label"].type == pa.int8()
    assert t["I1"].type == pa.float32()
    assert t["I1"][0].as_py() == 10.0
    assert math.isnan(t["I1"][1].as_py())
    assert t["I2"][1].as_py() == -3.0
    assert t["I13"][2].as_py() == 2.5
    assert t["C2"].to_pylist() == ["00000002", None, "00000002"]
    assert t["C26"][0].as_py() == "0000001a"
    assert ids(t, 2) == [1, 2, 3]
    assert "ts" not in t.column_names
    assert tally.total == 3 and tally.rejected == 0
    s = schema_for("criteo")
    assert (s.has_ts, s.source, s.categorical_type, len(s.dense), len(s.categorical)) == (False, "criteo", "string", 13, 26)


def test_criteo_rejects_counted_by_reason_with_lines(tmp_path):
    p = write(tmp_path, "bad.txt", [
        criteo_line("1"),                           # 1 ok
        criteo_line("0", fields=39),                # 2 wrong field count
        criteo_line("2"),                           # 3 label
        "",                                         # 4 blank: reported, not a reject
        criteo_line("0", dense={3: "abc"}),         # 5 non-numeric
        criteo_line("1", dense={5: "nan"}),         # 6 non-numeric (nan is not a value)
        criteo_line("0", dense={4: ""}),            # 7 ok, missing I4
        criteo_line("", dense={2: "x"}),            # 8 label (first failing reason wins)
        criteo_line("0") + "\textra",               # 9 wrong field count
        criteo_line("1"),                           # 10 ok
    ])
    t, tally = read(p, "criteo")
    assert ids(t) == [1, 7, 10]
    assert t["label"].to_pylist() == [1, 0, 1]
    assert math.isnan(t["I4"][1].as_py())
    assert tally.counts == {"wrong field count": 2, "label not in {0,1}": 2, "non-numeric dense value": 2}
    assert tally.total == 9 and tally.blank_lines == 1 and tally.rejected == 6
    wrong = tally.examples["wrong field count"]
    assert [(e[1], e[2]) for e in wrong] == [(2, "wrong number of fields (expected 40, got 39)"),
                                            (9, "wrong number of fields (expected 40, got 41)")]
    assert wrong[0][0] == str(p)
    assert wrong[0][3] == criteo_line("0", fields=39)[:197] + "..."  # texts are clipped to 200 characters
    dense = tally.examples["non-numeric dense value"]
    assert [(e[1], e[2]) for e in dense] == [(5, "non-numeric dense value in I3"),
                                            (6, "non-numeric dense value in I5")]
    assert dense[0][3].startswith(criteo_line("0", dense={3: "abc"})[:100])
    assert [e[1] for e in tally.examples["label not in {0,1}"]] == [3, 8]


def test_criteo_header_line_is_recognised(tmp_path):
    header = "\t".join(formats.CRITEO_COLUMNS)
    p = write(tmp_path, "h.txt", [header, criteo_line("1")])
    t, tally = read(p, "criteo")
    assert ids(t) == [2] and tally.total == 1 and tally.rejected == 0
    _, tally = read(p, "criteo", header="no")
    assert tally.counts == {"label not in {0,1}": 1}


def test_row_ids_stay_true_across_many_small_blocks(tmp_path):
    rng = np.random.default_rng(0)
    lines, good = [], []
    for i in range(1, 401):
        kind = rng.integers(0, 6)
        if kind == 0:
            lines.append(criteo_line("0", fields=12))
        elif kind == 1:
            lines.append("")
        elif kind == 2:
            lines.append(criteo_line("7"))
        else:
            lines.append(criteo_line(str(i % 2)))
            good.append(i)
    p = write(tmp_path, "many.txt", lines)
    t, tally = read(p, "criteo", block_size=1000)  # a handful of lines per block
    assert ids(t) == good
    assert t["label"].to_pylist() == [i % 2 for i in good]
    assert tally.total + tally.blank_lines == 400


def test_passing_an_open_file_gives_the_same_tables(tmp_path):
    p = write(tmp_path, "x.txt", [criteo_line("1"), criteo_line("0", fields=3), criteo_line("0")])
    t1, tally1 = read(p, "criteo")
    tally2 = RejectTally()
    with pa.input_stream(str(p)) as f:
        t2 = pa.concat_tables(iter_file(str(p), "criteo", 0, tally2, f=f))
    assert t1.equals(t2) and tally1.counts == tally2.counts


def test_crlf_line_endings(tmp_path):
    p = write(tmp_path, "crlf.txt", [criteo_line("1"), criteo_line("0")], end="\r\n")
    t, tally = read(p, "criteo")
    assert t["label"].to_pylist() == [1, 0] and tally.rejected == 0
    assert t["C26"][0].as_py() == "0000001a"


# ------------------------------------------------------------------------- avazu


def test_avazu_with_and_without_header(tmp_path):
    body = [avazu_line("0", device_ip="aa"), avazu_line("1", hour="14102213", device_ip="")]
    with_h = write(tmp_path, "train.csv", [AVAZU_HEADER, *body])
    without = write(tmp_path, "dev.csv", body)
    t1, tally1 = read(with_h, "avazu")
    t2, tally2 = read(without, "avazu")
    assert ids(t1) == [2, 3] and ids(t2) == [1, 2]
    assert tally1.total == tally2.total == 2 and tally1.rejected == tally2.rejected == 0
    for t in (t1, t2):
        assert t["label"].to_pylist() == [0, 1]
        assert t["ts"].to_pylist() == [1413849600, 1413849600 + 86400 + 13 * 3600]  # 2014-10-21 00:00 UTC
        assert t["hour_of_day"].to_pylist() == ["00", "13"]
        assert t["weekday"].to_pylist() == ["1", "2"]  # Tuesday, Wednesday (0 = Monday)
        assert t["device_ip"].to_pylist() == ["aa", None]
        assert "id" not in t.column_names and "hour" not in t.column_names and "click" not in t.column_names
    s = schema_for("avazu")
    assert s.has_ts and len(s.categorical) == 23 and s.dense == ()


def test_avazu_forced_header_modes(tmp_path):
    with_h = write(tmp_path, "h.csv", [AVAZU_HEADER, avazu_line("1")])
    t, tally = read(with_h, "avazu", header="no")
    assert ids(t) == [2] and tally.counts == {"label not in {0,1}": 1}
    assert tally.examples["label not in {0,1}"][0][1] == 1
    # Forcing a header onto a data line would drop a row silently: the names are checked.
    no_h = write(tmp_path, "n.csv", [avazu_line("0"), avazu_line("1")])
    with pytest.raises(DataError, match=r"n\.csv line 1: Avazu header does not match.*column 2 is '0', expected 'click'"):
        read(no_h, "avazu", header="yes")


def test_avazu_bad_rows(tmp_path):
    p = write(tmp_path, "bad.csv", [
        AVAZU_HEADER,
        avazu_line("1"),
        avazu_line("0", hour="14133100"),   # 3: month 13
        avazu_line("0", hour="1410210"),    # 4: 7 digits
        avazu_line("x"),                    # 5
        avazu_line("0")[:-3],               # 6: 23 fields
        avazu_line("1"),                    # 7
    ])
    t, tally = read(p, "avazu")
    assert ids(t) == [2, 7]
    assert tally.counts == {"bad timestamp": 2, "label not in {0,1}": 1, "wrong field count": 1}
    assert [e[1] for e in tally.examples["bad timestamp"]] == [3, 4]
    assert tally.examples["wrong field count"][0][1:3] == (6, "wrong number of fields (expected 24, got 23)")


def test_avazu_header_with_other_columns_is_an_error(tmp_path):
    p = write(tmp_path, "h.csv", [AVAZU_HEADER.replace("site_id", "site"), avazu_line("1")])
    with pytest.raises(DataError, match=r"h\.csv line 1.*'site'.*'site_id'"):
        read(p, "avazu")
    p = write(tmp_path, "short.csv", ["id,click,hour", avazu_line("1")])
    with pytest.raises(DataError, match=r"short\.csv line 1: header has 3 fields, expected 24"):
        read(p, "avazu")
    p = write(tmp_path, "only.csv", ["id,click,hour"])
    with pytest.raises(DataError, match=r"only\.csv line 1: header has 3 fields, expected 24"):
        read(p, "avazu")


# --------------------------------------------------------------------- movielens


def test_movielens_u_data_and_recbole_inter(tmp_path):
    udata = write(tmp_path, "u.data", ["196\t242\t3\t881250949", "186\t302\t4\t891717742", "22\t377\t5\t878887116"])
    inter = write(tmp_path, "ml-100k.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float",
                                              "196\t242\t3\t881250949", "186\t302\t4\t891717742",
                                              "22\t377\t5\t878887116"])
    t1, _ = read(udata, "movielens")
    t2, _ = read(inter, "movielens")
    assert ids(t1) == [1, 2, 3] and ids(t2) == [2, 3, 4]
    for t in (t1, t2):
        assert t["label"].to_pylist() == [0, 1, 1]
        assert t["user_id"].to_pylist() == ["196", "186", "22"]
        assert t["item_id"].to_pylist() == ["242", "302", "377"]
        assert t["ts"].to_pylist() == [881250949, 891717742, 878887116]
    s = schema_for("movielens")
    assert (s.user_field, s.item_field, s.has_ts, s.dense) == ("user_id", "item_id", True, ())


def test_movielens_header_order_and_bad_rows(tmp_path):
    p = write(tmp_path, "x.inter", ["item_id:token\tuser_id:token\ttimestamp:float\trating:float",
                                    "242\t196\t881250949.0\t4.5",
                                    "302\t186\t891717742\tgood",     # 3
                                    "377\t22\tyesterday\t5",          # 4
                                    "1\t2\t-5\t5",                    # 5
                                    "9\t8\t7\t1"])
    t, tally = read(p, "movielens")
    assert ids(t) == [2, 6]
    assert t["user_id"].to_pylist() == ["196", "8"] and t["ts"].to_pylist() == [881250949, 7]
    assert t["label"].to_pylist() == [1, 0]
    assert tally.counts == {"non-numeric rating": 1, "bad timestamp": 2}
    assert [e[1] for e in tally.examples["bad timestamp"]] == [4, 5]


def test_movielens_header_missing_column(tmp_path):
    p = write(tmp_path, "x.inter", ["user_id:token\titem_id:token\trating:float", "1\t2\t3"])
    with pytest.raises(DataError, match=r"x\.inter line 1: MovieLens header lacks timestamp"):
        read(p, "movielens")


# ------------------------------------------------------------------------ libsvm


def test_libsvm_plus_minus_one_labels(tmp_path):
    p = write(tmp_path, "frappe.libfm", ["-1 451:1 4149:1 5041:1", "1 12:1 4150:1 5041:1",
                                         "+1 13:1 4151:1 5042:1", "0 14:1 4152:1 5043:1"])
    t, tally = read(p, "libsvm", file_index=1)
    assert t["label"].to_pylist() == [0, 1, 1, 0]
    assert t["f0"].to_pylist() == ["451", "12", "13", "14"]
    assert t["f2"].to_pylist() == ["5041", "5041", "5042", "5043"]
    assert ids(t, 1) == [1, 2, 3, 4] and tally.rejected == 0
    assert schema_for_file(str(p), "libsvm").categorical == ("f0", "f1", "f2")


def test_libsvm_bad_lines(tmp_path):
    p = write(tmp_path, "x.fm.txt", [
        "0 1:1 7:1",        # 1
        "2 1:1 7:1",        # 2 label
        "1 1:1 7:abc",      # 3 token
        "1 1:1",            # 4 field count
        "",                 # 5 blank
        "1 3:1.0  9:1 ",    # 6 ok: 1.0, double and trailing space
        "1 3:1 9:1 5:1",    # 7 field count
        "0 a:1 8:1",        # 8 token
        "1 2:1\t8:1",       # 9 ok: tab
    ])
    t, tally = read(p, "libsvm")
    assert ids(t) == [1, 6, 9]
    assert t["f0"].to_pylist() == ["1", "3", "2"] and t["f1"].to_pylist() == ["7", "9", "8"]
    assert t["label"].to_pylist() == [0, 1, 1]
    assert tally.counts == {"label not in {0,1}": 1, "bad libsvm token": 2, "wrong field count": 2}
    assert tally.blank_lines == 1 and tally.total == 8
    assert [(e[1], e[2]) for e in tally.examples["wrong field count"]] == [
        (4, "wrong number of fields (expected 2, got 1)"), (7, "wrong number of fields (expected 2, got 3)")]
    assert [e[1] for e in tally.examples["bad libsvm token"]] == [3, 8]
    assert tally.examples["bad libsvm token"][0][3] == "1 1:1 7:abc"


def test_libsvm_styles_agree_and_num_fields_is_fixed(tmp_path):
    lines = [f"{i % 2} {i}:1 {100 + i}:1" for i in range(50)]
    plain = write(tmp_path, "plain.txt", lines)
    trailing = write(tmp_path, "trailing.txt", [ln + " " for ln in lines])
    t1, _ = read(plain, "libsvm", block_size=300)
    t2, _ = read(trailing, "libsvm", block_size=300)
    assert t1.equals(t2) and ids(t1) == list(range(1, 51))
    t3, tally = read(plain, "libsvm", num_fields=3)
    assert t3.num_rows == 0 and tally.counts == {"wrong field count": 50}


def test_libsvm_mixed_lines_small_blocks_keep_order_and_ids(tmp_path):
    # Lines off the fast path are parsed apart from their block; they must still come out
    # in line order with their own line numbers, whatever the block boundaries.
    rng = np.random.default_rng(1)
    for trial in range(8):
        lines, want = [], []
        for i in range(1, 201):
            kind, lab, (a, b) = rng.integers(0, 9), rng.choice(["0", "1", "-1", "+1"]), rng.integers(0, 999, 2)
            lines.append({0: f"{lab} {a}:1", 1: "", 2: f"{lab} {a}:1 {b}:1 ", 3: f"7 {a}:1 {b}:1",
                          4: f"{lab}\t{a}:1.0 {b}:1", 5: f"{lab} {a}:2 {b}:1"}.get(int(kind), f"{lab} {a}:1 {b}:1"))
            if kind in (2, 4) or kind >= 6:
                want.append((i, int(lab in ("1", "+1")), str(a), str(b)))
        p = write(tmp_path, f"mixed{trial}.txt", lines)
        t, tally = read(p, "libsvm", num_fields=2, block_size=int(rng.integers(200, 3000)))
        got = list(zip(ids(t), t["label"].to_pylist(), t["f0"].to_pylist(), t["f1"].to_pylist()))
        assert got == want
        assert tally.total + tally.blank_lines == 200 and tally.total - tally.rejected == len(want)


# ----------------------------------------------------------------------- parquet


def _synthetic_table(schema: LogSchema, labels: list[int]) -> pa.Table:
    n = len(labels)
    return pa.Table.from_pydict({
        "row_id": pa.array(range(10, 10 + n), pa.int64()), "label": pa.array(labels, pa.int8()),
        "d0": pa.array([0.5] * n, pa.float32()), "c0": pa.array(range(n), pa.int64()),
        "ts": pa.array([100] * n, pa.int64())}, schema=schema.arrow_schema())


def test_parquet_with_metadata_and_bad_labels(tmp_path):
    s = LogSchema(dense=("d0",), categorical=("c0",), categorical_type="int64", has_ts=True, source="synthetic")
    p = tmp_path / "part-0.parquet"
    pq.write_table(_synthetic_table(s, [0, 1, 2, 1]), p)
    t, tally = read(p, "parquet")
    assert t["row_id"].to_pylist() == [10, 11, 13] and t["label"].to_pylist() == [0, 1, 1]
    assert tally.counts == {"label not in {0,1}": 1}
    assert tally.examples["label not in {0,1}"][0][1:] == (3, "label not in {0,1}", "row 3: row_id=12 label=2")
    assert schema_for_file(str(p), "parquet") == s


def test_parquet_missing_column_and_missing_metadata(tmp_path):
    s = LogSchema(dense=("d0",), categorical=("c0",), categorical_type="int64", has_ts=True)
    table = _synthetic_table(s, [0, 1])
    p = tmp_path / "nocol.parquet"
    pq.write_table(table.drop_columns(["c0"]), p)
    with pytest.raises(DataError, match=r"nocol\.parquet: Parquet file lacks column 'c0'.*columns found: row_id, label, d0, ts"):
        read(p, "parquet")
    bare = tmp_path / "bare.parquet"
    pq.write_table(table.replace_schema_metadata(None), bare)
    with pytest.raises(DataError, match=r"bare\.parquet: Parquet file has no recdistill schema metadata"):
        list(iter_file(str(bare), "parquet", 0, RejectTally()))
    t, _ = read(bare, "parquet", schema=s)
    assert t.num_rows == 2


# ---------------------------------------------------------- budget, empty, missing


def test_budget_exceeded_names_file_and_line(tmp_path):
    p = write(tmp_path, "b.txt", [criteo_line("1"), criteo_line("3"), criteo_line("0")])
    _, tally = read(p, "criteo")
    tally.check_budget(0.5, str(p))  # 1 of 3 is within a 50% budget
    with pytest.raises(DataError) as err:
        tally.check_budget(0.001, str(p))
    msg = str(err.value)
    assert str(p) in msg and "line 2" in msg and "label not in {0,1}: 1" in msg
    assert "1 of 3 rows rejected" in msg and "0.001" in msg


def test_empty_and_missing_files(tmp_path):
    for fmt in formats.TEXT_FORMATS + ("parquet",):
        empty = tmp_path / f"empty.{fmt}"
        empty.write_text("")
        with pytest.raises(DataError, match=rf"{empty} is empty, expected {fmt} rows"):
            list(iter_file(str(empty), fmt, 0, RejectTally()))
        with pytest.raises(DataError, match=rf"{tmp_path}/nope does not exist"):
            list(iter_file(str(tmp_path / "nope"), fmt, 0, RejectTally()))
    header_only = write(tmp_path, "h.csv", [AVAZU_HEADER])
    with pytest.raises(DataError, match="is empty, expected avazu rows"):
        read(header_only, "avazu")
    with pa.input_stream(str(tmp_path / "empty.criteo")) as f:
        with pytest.raises(DataError, match="is empty, expected criteo rows"):
            list(iter_file(str(tmp_path / "empty.criteo"), "criteo", 0, RejectTally(), f=f))


def test_unknown_format_and_header_mode(tmp_path):
    p = write(tmp_path, "x.txt", [criteo_line()])
    with pytest.raises(DataError, match="unknown log format 'tsv'"):
        list(iter_file(str(p), "tsv", 0, RejectTally()))
    with pytest.raises(DataError, match="header='maybe'"):
        list(iter_file(str(p), "criteo", 0, RejectTally(), header="maybe"))


# ------------------------------------------------------------------ paths, tally


def test_expand_paths(tmp_path):
    d = tmp_path / "logs"
    (d / "sub").mkdir(parents=True)
    (d / ".hidden").mkdir()
    for name in ["b.txt", "a.txt", "_SUCCESS", ".crc", "sub/c.txt", ".hidden/d.txt"]:
        (d / name).write_text("x\n")
    assert expand_paths(d) == [str(d / "a.txt"), str(d / "b.txt"), str(d / "sub" / "c.txt")]
    assert expand_paths(str(d / "*.txt")) == [str(d / "a.txt"), str(d / "b.txt")]
    assert expand_paths(str(d / "b.txt")) == [str(d / "b.txt")]
    assert expand_paths([str(d / "b.txt"), str(d / "a.txt")]) == [str(d / "a.txt"), str(d / "b.txt")]
    with pytest.raises(DataError, match="no files match"):
        expand_paths(str(d / "*.csv"))
    with pytest.raises(DataError, match="no files match"):
        expand_paths(str(tmp_path / "missing"))
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="no files match"):
        expand_paths(tmp_path / "void")


def test_row_ids_increase_across_files(tmp_path):
    a = write(tmp_path, "a.txt", [criteo_line("0")] * 3)
    b = write(tmp_path, "b.txt", [criteo_line("1")] * 2)
    paths = expand_paths(tmp_path)
    rows = [r for i, p in enumerate(paths) for r in read(Path(p), "criteo", file_index=i)[0]["row_id"].to_pylist()]
    assert paths == [str(a), str(b)]
    assert rows == sorted(rows) and rows == [1, 2, 3, LINE | 1, LINE | 2]


def test_tally_merge_roundtrip_and_limits():
    a, b = RejectTally(), RejectTally()
    a.seen(10)
    a.add_file("a")
    for line in range(7, 0, -1):
        a.add("label not in {0,1}", "a", line, "x" * 300)
    b.seen(5)
    b.add_file("b")
    b.add("bad timestamp", "b", 2, "t", "bad timestamp in hour")
    b.blank(2)
    assert len(a.examples["label not in {0,1}"]) == 5
    assert len(a.examples["label not in {0,1}"][0][3]) == 200
    m = RejectTally.from_dict(a.to_dict()).merge(b)
    assert (m.total, m.rejected, m.blank_lines, m.files) == (15, 8, 2, ["a", "b"])
    assert [e[1] for e in m.examples["label not in {0,1}"]] == [3, 4, 5, 6, 7]
    assert m.rate == pytest.approx(8 / 15)
    text = "\n".join(m.summary_lines())
    assert "label not in {0,1}: 7" in text and "b line 2: bad timestamp in hour: 't'" in text
    assert RejectTally.from_dict(m.to_dict()) == m


# ------------------------------------------------------------------ real samples


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")
@pytest.mark.parametrize("rel, fmt, rows, positives", [
    ("criteo_dac_autoint/train_examples.txt", "criteo", 10_000, 2_182),
    ("avazu_wideresdnn/train.csv", "avazu", 8_087, 1_397),   # 17.27%
    ("avazu_wideresdnn/dev.csv", "avazu", 480, 86),
    ("avazu_wideresdnn/test.csv", "avazu", 432, 80),
    ("ipinyou_deepctr/train.fm.txt", "libsvm", 26_773, 255),
    ("ipinyou_deepctr/test.fm.txt", "libsvm", 21_150, 50),
])
def test_real_samples(rel, fmt, rows, positives):
    t, tally = read(SHARED / rel, fmt)
    assert tally.rejected == 0 and tally.blank_lines == 0 and tally.total == rows
    assert t.num_rows == rows and sum(t["label"].to_pylist()) == positives
    first = 2 if rel.endswith("train.csv") else 1  # only Avazu train.csv has a header line
    assert ids(t) == list(range(first, first + rows))
    if fmt == "criteo":
        assert round(100 * positives / rows, 2) == 21.82
    if fmt == "avazu":
        assert set(t["ts"].to_pylist()) == {1413849600}  # every row is hour 14102100
        if rel.endswith("train.csv"):
            assert round(100 * positives / rows, 2) == 17.27
    if fmt == "libsvm":
        assert t.schema.names[2:] == [f"f{i}" for i in range(16)]


# ------------------------------------------------- issue 13: reader defects found


def test_criteo_missing_dense_value_kept_beside_a_non_numeric_one(tmp_path):
    # One bad value in a column sends the block down the regex path, where a missing value
    # (null) must still count as fine: `or_` gave null there and rejected it.
    p = write(tmp_path, "d.txt", [criteo_line("0", dense={3: "abc"}), criteo_line("1", dense={3: ""}),
                                  criteo_line("1", dense={3: "7"})])
    t, tally = read(p, "criteo")
    assert ids(t) == [2, 3] and math.isnan(t["I3"][0].as_py()) and t["I3"][1].as_py() == 7.0
    assert tally.counts == {"non-numeric dense value": 1}


def test_avazu_empty_and_impossible_hours_are_rejected(tmp_path):
    hours = ["", "14023100", "14022900", "16022900", "14113100", "14103123", "99123123"]
    p = write(tmp_path, "h.csv", [avazu_line("1", hour=h) for h in hours])
    t, tally = read(p, "avazu")
    assert ids(t) == [4, 6, 7]  # 2016 is a leap year; 31 Nov, 29 Feb 2014, 31 Feb are not days
    assert t["ts"].to_pylist() == [1456704000, 1414796400, 946681200]
    assert t["ts"].null_count == 0
    assert tally.counts == {"bad timestamp": 4}
    assert [e[1] for e in tally.examples["bad timestamp"]] == [1, 2, 3, 5]


@pytest.mark.parametrize("ext", ["gz", "bz2", "zst"])
def test_truncated_or_corrupt_compressed_file_names_the_file(tmp_path, ext):
    text = ("\n".join(criteo_line(str(i % 2)) for i in range(400)) + "\n").encode()
    good = tmp_path / f"ok.txt.{ext}"
    with pa.CompressedOutputStream(str(good), {"gz": "gzip", "bz2": "bz2", "zst": "zstd"}[ext]) as f:
        f.write(text)
    t, _ = read(good, "criteo")
    assert t.num_rows == 400
    data = good.read_bytes()
    cut = tmp_path / f"cut.txt.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    bad = tmp_path / f"bad.txt.{ext}"
    bad.write_bytes(data[:16] + bytes(b ^ 0x5A for b in data[16:80]) + data[80:])
    for p in (cut, bad):
        with pytest.raises(DataError, match=rf"{p}: compressed data is truncated or corrupt"):
            read(p, "criteo")


def test_libsvm_field_sniffing_names_a_corrupt_compressed_file(tmp_path):
    from recdistill.data.formats import schema_for_file

    text = ("\n".join(f"{i % 2} 1:1 5:1 9:1" for i in range(400)) + "\n").encode()
    good = tmp_path / "ok.libsvm.gz"
    with pa.CompressedOutputStream(str(good), "gzip") as f:
        f.write(text)
    assert len(schema_for_file(str(good), "libsvm").categorical) == 3
    data = good.read_bytes()
    bad = tmp_path / "bad.libsvm.gz"
    bad.write_bytes(data[:16] + bytes(b ^ 0x5A for b in data[16:80]) + data[80:])
    with pytest.raises(DataError, match=rf"{bad}: compressed data is truncated or corrupt"):
        schema_for_file(str(bad), "libsvm")


def test_movielens_timestamps_beyond_int64_are_rejected(tmp_path):
    p = write(tmp_path, "u.data", ["1\t2\t4\t9223372036854775808", "1\t3\t4\t1e30", "1\t4\t4\t100",
                                   "1\t5\t4\t9223372036854774784", "1\t6\t4\t9223372036854775807"])
    t, tally = read(p, "movielens")
    assert ids(t) == [3, 4] and t["ts"].to_pylist() == [100, 9223372036854774784]
    assert tally.counts == {"bad timestamp": 3}  # ..807 reads as the float 2**63


@pytest.mark.parametrize("fmt", ["criteo", "avazu", "movielens", "libsvm"])
def test_lines_that_are_not_utf8_are_counted(tmp_path, capfd, fmt):
    good = {"criteo": [criteo_line("1"), criteo_line("0")], "avazu": [avazu_line("1"), avazu_line("0")],
            "movielens": ["1\t2\t4\t100", "3\t4\t1\t200"], "libsvm": ["1 2:1 3:1", "0 4:1 5:1"]}[fmt]
    sep = {"criteo": "\t", "avazu": ",", "movielens": "\t", "libsvm": " "}[fmt]
    bad_same = good[1].replace("1", "1\udcff", 1)  # right field count, one bad byte
    bad_short = "\udcfe" + good[1].rsplit(sep, 1)[0]  # and a wrong field count: the handler's path
    p = tmp_path / f"x.{fmt}"
    p.write_bytes("\n".join([good[0], bad_same, good[1], bad_short, good[0]]).encode("utf-8", "surrogateescape") + b"\n")
    t, tally = read(p, fmt)
    assert ids(t) == [1, 3, 5]
    assert tally.counts == {"invalid UTF-8": 2} and tally.total == 5
    ex = tally.examples["invalid UTF-8"]
    assert [e[1] for e in ex] == [2, 4] and "\\xff" in ex[0][3] and "\\xfe" in ex[1][3]
    assert "Exception ignored" not in capfd.readouterr().err


@pytest.mark.parametrize("fmt", ["criteo", "avazu"])
def test_more_than_five_lines_that_are_not_utf8_in_one_block_are_all_counted(tmp_path, fmt):
    """Only five travel as examples; the count once stopped there too, so the sixth bad line
    of a block was neither kept nor rejected (found by tests/data/test_byte_ranges.py)."""
    good = criteo_line("1") if fmt == "criteo" else avazu_line("1")
    bad = good.replace("1", "1\udcff", 1)
    p = tmp_path / f"x.{fmt}"
    p.write_bytes("\n".join([good] + [bad] * 8 + [good]).encode("utf-8", "surrogateescape") + b"\n")
    t, tally = read(p, fmt)
    assert ids(t) == [1, 10]
    assert tally.counts == {"invalid UTF-8": 8} and tally.total == 10 and tally.rejected + t.num_rows == tally.total
    assert [e[1] for e in tally.examples["invalid UTF-8"]] == [2, 3, 4, 5, 6]


def test_libsvm_byte_order_mark_and_bare_cr_line_endings(tmp_path):
    for name, raw in [("bom1", b"\xef\xbb\xbf1 2:1 3:1\n"), ("bom2", b"\xef\xbb\xbf-1 2:1 3:1 \n0 4:1 5:1\n"),
                      ("cr", b"1 2:1 3:1\r0 4:1 5:1\r+1 6:1 7:1"), ("cr2", b"1 2:1 3:1 \r0 4:1\t5:1\r")]:
        p = tmp_path / f"{name}.fm.txt"
        p.write_bytes(raw)
        t, tally = read(p, "libsvm")
        n = raw.count(b"\r") + raw.count(b"\n") + (not raw.endswith((b"\r", b"\n")))
        assert tally.rejected == 0 and ids(t) == list(range(1, n + 1)), name
        assert t["f0"][0].as_py() == "2" and t["f1"][0].as_py() == "3"


def _parquet(tmp_path: Path, name: str, row_ids: list[int], dense: list[float]) -> Path:
    s = LogSchema(dense=("d0",), categorical=("c0",), categorical_type="int64", has_ts=True, source="synthetic")
    n = len(row_ids)
    t = pa.Table.from_pydict({
        "row_id": pa.array(row_ids, pa.int64()), "label": pa.array([i % 2 for i in range(n)], pa.int8()),
        "d0": pa.array(dense, pa.float32()), "c0": pa.array(range(n), pa.int64()),
        "ts": pa.array([100] * n, pa.int64())}, schema=s.arrow_schema())
    p = tmp_path / name
    pq.write_table(t, p, row_group_size=2)
    return p


def test_parquet_infinite_dense_values_rejected_nan_kept(tmp_path):
    p = _parquet(tmp_path, "inf.parquet", [1, 2, 3, 4], [0.5, float("inf"), float("nan"), -float("inf")])
    t, tally = read(p, "parquet")
    assert t["row_id"].to_pylist() == [1, 3] and math.isnan(t["d0"][1].as_py())  # NaN = missing
    assert tally.counts == {"non-numeric dense value": 2}
    assert tally.examples["non-numeric dense value"][0][1:3] == (2, "infinite dense value in d0")
    assert tally.id_ranges == {str(p): (1, 4)}


def test_parquet_row_id_twice_in_a_file_is_an_error(tmp_path):
    for name, row_ids, rows in [("inc.parquet", [1, 2, 2, 3, 4], (2, 3)),   # in order, one repeat
                                ("mix.parquet", [9, 3, 7, 5, 3], (2, 5)),   # out of order
                                ("far.parquet", [1, 2, 3, 4, 1], (1, 5))]:  # across batches
        p = _parquet(tmp_path, name, row_ids, [0.0] * len(row_ids))
        with pytest.raises(DataError, match=rf"{p}: row_id {row_ids[rows[0] - 1]} occurs more than once "
                                            rf"\(rows {rows[0]} and {rows[1]}\)"):
            list(iter_parquet(str(p), RejectTally(), None, None, batch_rows=2))
    ok = _parquet(tmp_path, "ok.parquet", [5, 1, 4, 2], [0.0] * 4)
    t, _ = read(ok, "parquet")
    assert t["row_id"].to_pylist() == [5, 1, 4, 2]


def test_inspect_report_shows_timestamps_past_year_9999() -> None:
    """MovieLens accepts any int64 second count; the report must not crash on one."""
    from recdistill.data.inspect import LogReport
    from recdistill.data.rejects import RejectTally

    lines = LogReport("x", "movielens", 1, 0, [], RejectTally(), (0, 2 ** 62)).lines()
    assert any("1970-01-01 00:00 → 4611686018427387904 s UTC" in line for line in lines)
