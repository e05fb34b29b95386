"""Ray Data reads through ``read_log``: files in two formats, rejects via the ledger, budgets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from recdistill.data.datasource import new_ledger, read_log, read_rejects  # noqa: E402
from recdistill.data.formats import AVAZU_COLUMNS  # noqa: E402
from recdistill.data.rejects import DataError  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()
    if old is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = old


def criteo(label: str, fields: int = 40) -> str:
    return "\t".join([label, *(str(i) for i in range(1, 14)), *(f"{i:08x}" for i in range(26))][:fields])


def avazu(click: str) -> str:
    return ",".join(["7", click, "14102100", "1005", "0", *(f"{i:x}" for i in range(19))])


def write(p: Path, lines: list[str]) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n")
    return p


def test_read_log_two_formats_with_ledger(tmp_path):
    write(tmp_path / "criteo" / "day0.txt", [criteo("1"), criteo("0", fields=20), criteo("0")])
    write(tmp_path / "criteo" / "day1.txt", [criteo("0"), criteo("1")])
    write(tmp_path / "criteo" / "_SUCCESS", [])
    ledger = new_ledger()
    ds, schema = read_log(str(tmp_path / "criteo"), "criteo", error_budget=0.5, ledger=ledger)
    rows = ds.take_all()
    assert schema.source == "criteo" and len(schema.dense) == 13
    assert sorted((r["row_id"] >> 40, r["row_id"] & ((1 << 40) - 1), r["label"]) for r in rows) == [
        (0, 1, 1), (0, 3, 0), (1, 1, 0), (1, 2, 1)]
    tally = read_rejects(ledger)
    assert (tally.total, tally.rejected, tally.counts) == (5, 1, {"wrong field count": 1})
    (example,) = tally.examples["wrong field count"]
    assert example[0].endswith("criteo/day0.txt") and example[1] == 2
    tally.check_budget(0.5, "criteo")
    # A second execution replaces each file's tally instead of adding to it.
    assert ds.count() == 4 and read_rejects(ledger).total == 5

    avazu_path = write(tmp_path / "avazu.csv", [",".join(AVAZU_COLUMNS), avazu("1"), avazu("0")])
    ledger = new_ledger()
    ds, schema = read_log(str(avazu_path), "avazu", ledger=ledger)
    rows = sorted(ds.take_all(), key=lambda r: r["row_id"])
    assert [(r["row_id"], r["label"], r["ts"]) for r in rows] == [(2, 1, 1413849600), (3, 0, 1413849600)]
    assert schema.has_ts and read_rejects(ledger).total == 2

    libsvm_path = write(tmp_path / "x.fm.txt", ["-1 3:1 9:1", "1 4:1 8:1", "1 4:1"])
    ds, schema = read_log(str(libsvm_path), "libsvm", error_budget=0.5, ledger=ledger)
    rows = sorted(ds.take_all(), key=lambda r: r["row_id"])
    assert [(r["row_id"], r["label"], r["f0"], r["f1"]) for r in rows] == [(1, 0, "3", "9"), (2, 1, "4", "8")]
    assert schema.categorical == ("f0", "f1")
    assert read_rejects(ledger).counts == {"wrong field count": 1}  # the avazu file's tally is kept too
    assert read_rejects(ledger).total == 5


def test_ledgers_of_one_process_share_one_actor_keep_apart_and_go_when_dropped(tmp_path):
    """A ledger per read, one actor per process: two reads' tallies stay apart in it, and a
    ledger whose handle is gone leaves it."""
    import gc

    a, b = new_ledger(), new_ledger()
    assert a.actor is b.actor and a.id != b.id
    ds, _ = read_log(str(write(tmp_path / "a.txt", [criteo("1"), criteo("9"), criteo("0")])), "criteo",
                     error_budget=0.5, ledger=a)
    ds.materialize()
    assert read_rejects(a).total == 3 and read_rejects(a).rejected == 1 and read_rejects(b).total == 0
    actor, gone = a.actor, a.id
    assert gone in ray.get(actor.ledgers.remote())
    del a, ds
    gc.collect()
    assert gone not in ray.get(actor.ledgers.remote())
    assert read_rejects(b).total == 0


# A driver that joins a cluster (a submitted job does) and exits holding a ledger; a weak
# finalizer made before Ray's import, as libraries do, puts weakref's exit hook after Ray's.
JOINED_EXIT = """
import weakref
weakref.finalize(type("X", (), {})(), lambda: None)
from recdistill.ray_env import ensure_ray
from recdistill.data.datasource import new_ledger
ensure_ray()
kept = new_ledger()
print("done", flush=True)
"""


def test_a_driver_that_exits_holding_a_ledger_does_not_join_ray_again():
    """Dropping a ledger at exit, after Ray's own exit hook had shut it down, started Ray
    again (any actor call does): a job's driver rejoined its cluster, and once died of a
    segmentation fault after its run had finished."""
    import subprocess
    import sys

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    out = subprocess.run([sys.executable, "-c", JOINED_EXIT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stdout[-2000:] + out.stderr[-2000:]
    assert "Connecting to existing Ray cluster" not in out.stderr, out.stderr[-2000:]


def test_file_over_budget_fails_the_read(tmp_path):
    p = write(tmp_path / "bad.txt", [criteo("1"), criteo("9"), criteo("0")])
    ledger = new_ledger()
    ds, _ = read_log(str(p), "criteo", ledger=ledger)  # default budget 0.001
    with pytest.raises(DataError) as err:
        ds.materialize()
    msg = str(err.value)
    assert str(p) in msg and "line 2" in msg and "label not in {0,1}: 1" in msg
    assert read_rejects(ledger).rejected == 1  # reported before failing


def test_missing_and_empty_inputs_fail_before_reading(tmp_path):
    with pytest.raises(DataError, match="no files match"):
        read_log(str(tmp_path / "nothing*.txt"), "criteo")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty.txt is empty, expected criteo rows"):
        read_log(str(tmp_path / "empty.txt"), "criteo")


def _parquet_part(path: Path, row_ids: list[int]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recdistill.data.schema import LogSchema

    s = LogSchema(dense=("d0",), categorical=("c0",), categorical_type="int64", source="synthetic")
    n = len(row_ids)
    pq.write_table(pa.Table.from_pydict({
        "row_id": pa.array(row_ids, pa.int64()), "label": pa.array([0] * n, pa.int8()),
        "d0": pa.array([0.5] * n, pa.float32()), "c0": pa.array(range(n), pa.int64())},
        schema=s.arrow_schema()), path)


def test_parquet_row_id_in_two_files_fails_the_read(tmp_path):
    # Interleaved id ranges are fine as long as no id is in two files; without a ledger
    # passed, read_log makes its own for the check.
    (tmp_path / "ok").mkdir()
    _parquet_part(tmp_path / "ok" / "a.parquet", [1, 3, 5])
    _parquet_part(tmp_path / "ok" / "b.parquet", [2, 4, 6])
    _parquet_part(tmp_path / "ok" / "c.parquet", [10, 11])
    ds, _ = read_log(str(tmp_path / "ok"), "parquet")
    assert sorted(r["row_id"] for r in ds.take_all()) == [1, 2, 3, 4, 5, 6, 10, 11]
    (tmp_path / "dup").mkdir()
    _parquet_part(tmp_path / "dup" / "a.parquet", [1, 3, 5])
    _parquet_part(tmp_path / "dup" / "b.parquet", [2, 5, 6])
    ds, _ = read_log(str(tmp_path / "dup"), "parquet")
    with pytest.raises(DataError, match=r"row_id 5 occurs in both .*dup/[ab]\.parquet and .*dup/[ab]\.parquet"):
        ds.materialize()


def test_movielens_side_files_join_in_ray_read_tasks(tmp_path, ray_local):
    """In this module, which starts Ray anyway: tests/data/test_movielens_side.py has the pure checks."""
    import importlib.util

    import pyarrow as pa

    # the fixtures of the pure MovieLens tests (--import-mode=importlib: no sibling imports by name)
    spec = importlib.util.spec_from_file_location("movielens_side", Path(__file__).with_name("test_movielens_side.py"))
    side = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(side)
    EXPECTED, SIDE_COLS, side_values, write_ml100k = side.EXPECTED, side.SIDE_COLS, side.side_values, side.write_ml100k

    from recdistill.data.datasource import read_log

    write_ml100k(tmp_path, "u1.base")
    write_ml100k(tmp_path, "u1.test")
    ds, schema = read_log(str(tmp_path / "u1.*"), "movielens", error_budget=0.5)
    assert schema.categorical == ("user_id", "item_id", *SIDE_COLS)
    t = pa.Table.from_pylist(ds.take_all()).sort_by("row_id")
    assert side_values(t) == EXPECTED * 2
    bare = tmp_path / "bare" / "u.data"
    bare.parent.mkdir()
    bare.write_text("1\t1\t4\t5\n")
    # Refused before any task runs; files in sorted order, so bare/ comes first.
    with pytest.raises(DataError, match=r"u1\.base: MovieLens side files \(.*u\.user, .*u\.item\) give other "
                                        r"columns than those of .*bare/u\.data \(no side files\)"):
        read_log([str(tmp_path / "u1.base"), str(bare)], "movielens")


def test_a_large_file_is_read_as_byte_ranges_that_lose_nothing(tmp_path):
    """A Criteo file over split_bytes is cut into ranges, one read task each, and a small
    gzipped one beside it is read whole: the rows, their ids, the rejects with their line
    numbers and the blank lines are those of whole-file reads, and so is the error budget."""
    import pyarrow as pa

    from recdistill.data.datasource import plan_pieces

    rng = __import__("random").Random(0)
    lines = []
    for i in range(3000):
        kind = rng.random()
        lines.append("" if kind < 0.02 else criteo("7") if kind < 0.05 else criteo("1", 30) if kind < 0.07
                     else criteo(str(i % 2)))
    big = tmp_path / "day_1.txt"
    big.write_text("\r\n".join(lines) + "\r\n")
    import gzip

    small = tmp_path / "day_0.txt.gz"
    small.write_bytes(gzip.compress(("\n".join([criteo("1")] * 50 + [criteo("x")]) + "\n").encode()))
    paths = [str(small), str(big)]

    def read(split: int) -> tuple[pa.Table, object, int]:
        ledger = new_ledger()
        ds, _ = read_log(paths, "criteo", ledger=ledger, error_budget=0.1, split_bytes=split)
        return pa.Table.from_pylist(ds.take_all()).sort_by("row_id"), read_rejects(ledger), ds.materialize().num_blocks()

    ranged, r_rejects, _ = read(40_000)
    whole, w_rejects, _ = read(0)
    pieces = plan_pieces(paths, "criteo", 40_000)
    assert [p.whole for p in pieces] == [True] + [False] * (len(pieces) - 1) and len(pieces) - 1 == -(-big.stat().st_size // 40_000)
    assert ranged.num_rows == whole.num_rows and ranged["row_id"].equals(whole["row_id"])
    assert ranged.drop_columns([f"I{i}" for i in range(1, 14)]).equals(whole.drop_columns([f"I{i}" for i in range(1, 14)]))
    assert (r_rejects.total, r_rejects.counts, r_rejects.blank_lines) == (w_rejects.total, w_rejects.counts, w_rejects.blank_lines)
    assert r_rejects.examples == w_rejects.examples
    assert r_rejects.rejected + ranged.num_rows == r_rejects.total == 3000 + 51 - w_rejects.blank_lines
    # a file's budget is checked over its ranges together, as a whole-file read checks it:
    # a range over budget (200 of its 300 rows) does not fail a file under it (200 of 600)
    spoiled = tmp_path / "spoiled.txt"
    spoiled.write_text("\n".join([criteo("1")] * 400 + [criteo("x")] * 200) + "\n")
    half = spoiled.stat().st_size // 2
    assert [p.line_offset for p in plan_pieces([str(spoiled)], "criteo", half)] == [0, 300]
    for split in (half, 0):
        assert read_log(str(spoiled), "criteo", error_budget=0.4, split_bytes=split)[0].count() == 400
        with pytest.raises(Exception, match=r"spoiled\.txt: 200 of 600 rows rejected"):
            read_log(str(spoiled), "criteo", error_budget=0.3, split_bytes=split)[0].materialize()
