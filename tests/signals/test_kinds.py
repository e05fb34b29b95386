"""Signal kinds in the store: each kind's round trip, schema checks, as-of reads of
entity-time kinds, one channel per teacher of a committee, and today's logit files unchanged.
Pure: no Ray."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recdistill.signals.blocks import BlockMeta, EntityBlockMeta
from recdistill.signals.kinds import KINDS, signal_kind
from recdistill.signals.store import SignalStore, new_generation, signal_id


def _entity_block(kind: str, entities: list[int], times: list[int], values: pa.Array) -> pa.Table:
    return pa.table({"entity_id": pa.array(entities, pa.int64()), "time": pa.array(times, pa.int64()),
                     signal_kind(kind).column: values})


def _embeddings(rows: list[list[float]]) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float32(), len(rows[0])))


def test_the_registry_declares_each_kind() -> None:
    assert {n: (k.keyed_by, k.column, k.expected()) for n, k in KINDS.items()} == {
        "logit": ("row", "teacher_logit", "float"),
        "embedding": ("entity_time", "teacher_embedding", "fixed_size_list<float>[dim]"),
        "code": ("entity_time", "teacher_code", "fixed_size_list<int32>[levels] or int64")}
    assert KINDS["embedding"].schema(8).field("teacher_embedding").type == pa.list_(pa.float32(), 8)
    assert KINDS["code"].schema().field("teacher_code").type == pa.int64()
    assert KINDS["code"].schema(3).field("teacher_code").type == pa.list_(pa.int32(), 3)
    with pytest.raises(ValueError, match="signal kind 'embedding': no size given; its column 'teacher_embedding'"):
        KINDS["embedding"].schema()


def test_each_kind_round_trips_through_the_store(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    sid = signal_id("k", new_generation())
    logits = store.write_table(sid, "logit", 0, 1, 0, 0, pa.table({
        "teacher_logit": pa.array([0.5, -1.0], pa.float32()), "row_id": pa.array([4, 2], pa.int64())}))
    emb = store.write_table(sid, "embedding", 0, 1, 0, 0,
                            _entity_block("embedding", [7, 3, 7], [10, 11, 12], _embeddings([[1, 2], [3, 4], [5, 6]])))
    rq = store.write_table(sid, "code", 0, 1, 0, 0,
                           _entity_block("code", [3], [5], pa.array([[1, 2, 3]], pa.list_(pa.int32(), 3))))
    ids = store.write_table(sid, "code", 0, 1, 0, 0, _entity_block("code", [3], [5], pa.array([99], pa.int64())),
                            channel="semantic-id")
    assert logits == BlockMeta(sid, 0, 1, logits.path, 2, 2, 4, "logit", "teacher")
    assert emb == EntityBlockMeta(sid, "embedding", "teacher", 0, 1, emb.path, 3, 3, 7, 10, 12)
    for meta in (logits, emb, rq, ids):  # the footer tells the same as the writer
        assert store.scan(sid, meta.kind, meta.channel) == ([meta], [])
    got = store.read_range([logits], 0, 10)
    assert got.column_names == ["row_id", "teacher_logit"]  # the kind's column order, whatever the table's
    assert got.column("row_id").to_pylist() == [2, 4] and got.column("teacher_logit").to_pylist() == [-1.0, 0.5]
    assert store.read_as_of([emb], np.array([7, 3]), 100).column("teacher_embedding").to_pylist() == [[5, 6], [3, 4]]
    assert store.read_as_of([rq], np.array([3]), 5).column("teacher_code").to_pylist() == [[1, 2, 3]]
    assert store.read_as_of([ids], np.array([3]), 5).column("teacher_code").to_pylist() == [99]


@pytest.mark.parametrize("kind, table, message", [
    ("logit", pa.table({"row_id": pa.array([1], pa.int64()), "teacher_logit": pa.array([1.0], pa.float64())}),
     "signal kind 'logit' .*: column 'teacher_logit' is double, expected float"),
    ("logit", pa.table({"row_id": pa.array([1], pa.int32()), "teacher_logit": pa.array([1.0], pa.float32())}),
     "column 'row_id' is int32, expected int64"),
    ("logit", pa.table({"row_id": pa.array([1, None], pa.int64()), "teacher_logit": pa.array([1.0, 2.0], pa.float32())}),
     "column 'row_id' has 1 null"),
    ("logit", pa.table({"row_id": pa.array([1], pa.int64())}), "lacks column 'teacher_logit'"),
    ("logit", pa.table({"row_id": pa.array([1], pa.int64()), "teacher_logit": pa.array([1.0], pa.float32()),
                        "label": pa.array([1], pa.int8())}), r"has column\(s\) \['label'\] it does not hold"),
    ("embedding", _entity_block("embedding", [1], [1], pa.array([[1.0, 2.0]], pa.list_(pa.float32()))),
     r"signal kind 'embedding' \(columns entity_id, time, teacher_embedding\): column 'teacher_embedding' is "
     r"list<item: float>, expected fixed_size_list<float>\[dim\]"),
    ("embedding", pa.table({"entity_id": pa.array([1], pa.int64()), "teacher_embedding": _embeddings([[1.0]])}),
     "lacks column 'time'"),
    ("code", _entity_block("code", [1], [1], pa.array([[1, 2]], pa.list_(pa.int64(), 2))),
     r"column 'teacher_code' is fixed_size_list<item: int64>\[2\], expected fixed_size_list<int32>\[levels\] or int64"),
    ("logit", pa.table({"row_id": pa.array([], pa.int64()), "teacher_logit": pa.array([], pa.float32())}),
     "an empty signal block"),
])
def test_a_block_that_is_not_of_its_kind_is_refused(tmp_path: Path, kind: str, table: pa.Table, message: str) -> None:
    store = SignalStore(str(tmp_path / "s"))
    with pytest.raises(ValueError, match=message) as err:
        store.write_table("k", kind, 0, 1, 0, 0, table)
    assert "part-r0000-000000.parquet" in str(err.value)  # names the block
    assert not (tmp_path / "s").exists()  # nothing written


def test_unknown_kinds_and_bad_channels_are_named(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"signal kind 'attention': not a kind the store holds \(logit, embedding, code\)"):
        store.scan("k", "attention")
    for bad in ("", "Expert", "a/b", "_x"):
        with pytest.raises(ValueError, match="signal channel"):
            store.write_block("k", 0, 1, 0, 0, np.arange(2), np.zeros(2, np.float32), channel=bad)


def test_entity_time_reads_are_as_of_a_time(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    # two windows of user embeddings; user 5 twice in window 1, user 9 only later
    w1 = store.write_table("k", "embedding", 0, 1, 0, 0,
                           _entity_block("embedding", [5, 5, 6], [100, 200, 150], _embeddings([[1], [2], [3]])))
    w2 = store.write_table("k", "embedding", 0, 2, 0, 0,
                           _entity_block("embedding", [5, 9, 6], [300, 300, 150], _embeddings([[4], [5], [30]])))
    blocks, _ = store.scan("k", "embedding")
    assert blocks == [w1, w2]
    got = store.read_as_of(blocks, np.array([5, 5, 5, 5, 9, 9, 6, 7]), np.array([99, 100, 299, 300, 299, 300, 150, 999]))
    assert got.column("entity_id").to_pylist() == [5, 5, 5, 5, 9, 9, 6, 7]
    assert got.column("time").to_pylist() == [None, 100, 200, 300, None, 300, 150, None]
    # user 6 at time 150 in both blocks: the later block's value
    assert got.column("teacher_embedding").to_pylist() == [None, [1], [2], [4], None, [5], [30], None]
    one = store.read_as_of(blocks, np.array([9, 5]), 250)  # one time for every entity
    assert one.column("teacher_embedding").to_pylist() == [None, [2]]
    nothing = store.read_as_of(blocks, np.array([5]), 0)  # before every block: their type, no values
    assert nothing.schema.field("teacher_embedding").type == pa.list_(pa.float32(), 1)
    assert nothing.column("teacher_embedding").to_pylist() == [None]
    assert store.read_as_of(blocks, np.array([], np.int64), 0).num_rows == 0
    with pytest.raises(ValueError, match="read_as_of: no blocks to read"):
        store.read_as_of([], np.array([5]), 0)
    logit = store.write_block("k", 0, 1, 0, 0, np.arange(3), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="read_range: signal kind 'embedding' is keyed by entity_time, not row"):
        store.read_range(blocks, 0, 10)
    with pytest.raises(ValueError, match=r"read_as_of: blocks of 2 signals"):
        store.read_as_of([*blocks, logit], np.array([5]), 0)


def test_two_teachers_logits_share_a_key_and_generation(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    sid = signal_id("k", new_generation())
    rows = np.arange(10, 14)
    main = store.write_block(sid, 0, 1, 0, 0, rows, np.full(4, 1.0, np.float32))
    expert = store.write_block(sid, 0, 1, 0, 0, rows, np.full(4, 2.0, np.float32), channel="expert-ads")
    store.mark_complete(sid, 0, 1, rows=4, blocks=1)
    store.mark_complete(sid, 0, 1, rows=4, blocks=1, extra={"teacher": "ads"}, channel="expert-ads")
    assert main.path == f"{store.root}/{sid}/v0/w1/part-r0000-000000.parquet"
    assert expert.path == f"{store.root}/{sid}/logit/expert-ads/v0/w1/part-r0000-000000.parquet"
    assert store.scan(sid) == ([main], [(0, 1)])  # the single teacher's view holds its own blocks only
    assert store.scan(sid, channel="expert-ads") == ([expert], [(0, 1)])
    assert store.completion(sid, 0, 1, channel="expert-ads") == {"rows": 4, "blocks": 1, "teacher": "ads"}
    assert store.read_range([main], 0, 99).column("teacher_logit").to_pylist() == [1.0] * 4
    assert store.read_range([expert], 0, 99).column("teacher_logit").to_pylist() == [2.0] * 4
    with pytest.raises(ValueError, match=r"read_range: blocks of 2 signals .*'expert-ads'.*'teacher'.*one at a time"):
        store.read_range([main, expert], 0, 99)  # each row id would come twice
    store.write_teacher("k", {"key": "k", "generation": sid.split("/")[1]})
    assert store.remove_generations("k", {sid.split("/")[1]}) == []  # channels live inside their generation


def test_todays_logit_blocks_are_stored_as_before(tmp_path: Path) -> None:
    """The single teacher's logits: the same path and the same bytes as before kinds and
    channels, and a block written then reads as one now."""
    store = SignalStore(str(tmp_path / "s"))
    ids, z = np.array([5, 7, 9]), np.array([0.1, 0.2, 0.3], np.float32)
    meta = store.write_block("k/g1", 0, 1, 2, 3, ids, z)
    assert meta.path == f"{tmp_path}/s/k/g1/v0/w1/part-r0002-000003.parquet"
    before = io.BytesIO()  # the writer before kinds: this table, this schema, pq.write_table
    pq.write_table(pa.table({"row_id": pa.array(ids, pa.int64()), "teacher_logit": pa.array(z, pa.float32())},
                            schema=pa.schema([("row_id", pa.int64()), ("teacher_logit", pa.float32())])), before)
    assert Path(meta.path).read_bytes() == before.getvalue()
    old = tmp_path / "s" / "k" / "g1" / "v0" / "w2" / "part-r0000-000000.parquet"
    old.parent.mkdir(parents=True)
    old.write_bytes(before.getvalue())
    blocks, _ = store.scan("k/g1")
    assert blocks[1] == BlockMeta("k/g1", 0, 2, str(old), 3, 5, 9)  # kind logit, the single teacher
    assert store.read_range(blocks[1:], 0, 9).equals(store.read_range([meta], 0, 9))


def test_a_teacher_records_what_it_supplies_and_a_reader_gets_only_that(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    gen = new_generation()
    info = {"key": "k", "generation": gen}
    store.commit_teacher("k", info)
    assert store.teacher_info("k") == info == {"key": "k", "generation": gen, "supplies": ["logit"]}
    store.commit_teacher("e", {"key": "e", "generation": gen}, supplies=("embedding", "code"))
    assert store.committed("e", reads=("embedding",)) == f"e/{gen}"
    with pytest.raises(ValueError, match=r"teacher e .*supplies signal kind\(s\) \['embedding', 'code'\]; its reader "
                                         r"asks for \['logit'\]"):
        store.teacher_info("e")  # a reader of logits, as every student is today
    with pytest.raises(ValueError, match="signal kind 'logits': not a kind"):
        store.commit_teacher("x", {"key": "x", "generation": gen}, supplies=("logits",))
    with pytest.raises(ValueError, match="each once"):
        store.commit_teacher("x", {"key": "x", "generation": gen}, supplies=("logit", "logit"))
    store.write_teacher("old", {"key": "old", "generation": gen})  # a record from before kinds: logits
    assert store.committed("old") == f"old/{gen}"
