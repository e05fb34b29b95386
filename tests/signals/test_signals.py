"""Signal store (Parquet, content-addressed) and the hub actor: index, wait, restart."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import ray

from recdistill.config import load_config
from recdistill.signals.hub import get_hub
from recdistill.train.keys import teacher_key
from recdistill.signals.store import SignalStore

pytestmark = pytest.mark.timeout(120)


def test_teacher_key_covers_what_decides_the_teacher(tmp_path: Path) -> None:
    base = teacher_key(load_config(None, []))
    assert teacher_key(load_config(None, ["students.0.alpha=7", "distill.loss=kl", "run.name=x"])) == base
    assert teacher_key(load_config(None, ["data.path=/elsewhere"])) == base  # synthetic: rows, not location
    # student-side keys: the history cut only says which rows the students take, when the
    # teacher's order does not depend on it (a log with time, not shuffled within windows)
    student_side = ["teacher.history_fraction=0.3", "students.0.sampling_ratio=0.2", "students.0.rows=recent",
                    "students.0.epochs=3", "students.0.name=other", "students.1.name=second"]
    assert teacher_key(load_config(None, student_side)) == base
    assert teacher_key(load_config(None, ["data.shuffle=window", "teacher.history_fraction=0.3"])) != \
        teacher_key(load_config(None, ["data.shuffle=window"]))  # the cut orders the shuffle: it matters
    criteo = ["data.source=criteo", f"data.path={tmp_path}"]  # no time column: auto shuffles within windows
    assert teacher_key(load_config(None, criteo)) != teacher_key(load_config(None, [*criteo, "teacher.history_fraction=0.3"]))
    for change in ("teacher.width=17", "run.seed=4", "data.rows=1234", "data.splits=[0.7,0.2,0.1]",
                   "teacher.sampling_ratio=0.5", "platform.teacher_workers=2"):
        assert teacher_key(load_config(None, [change])) != base, change
    # a real log: its files' size and mtime are part of the identity
    f = tmp_path / "log.parquet"
    f.write_bytes(b"x")
    real = ["data.source=parquet", f"data.path={f}"]
    k1 = teacher_key(load_config(None, real))
    f.write_bytes(b"xy")
    assert teacher_key(load_config(None, real)) != k1


def test_store_blocks_scan_and_range_reads(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    store.write_block("k", 0, 1, 0, 0, np.array([5, 7, 9]), np.array([0.1, 0.2, 0.3], np.float32))
    store.write_block("k", 0, 1, 1, 0, np.array([6, 8]), np.array([1.0, 2.0], np.float32))
    store.write_block("k", 0, 1, 0, 0, np.array([5, 7, 9]), np.array([0.5, 0.6, 0.7], np.float32))  # rewrite
    store.mark_complete("k", 0, 1, rows=5, blocks=2)
    blocks, complete = store.scan("k")
    assert [(b.rows, b.row_id_min, b.row_id_max) for b in blocks] == [(3, 5, 9), (2, 6, 8)]
    assert complete == [(0, 1)]
    t = store.read_range(blocks, 6, 8)
    assert t.column("row_id").to_pylist() == [6, 7, 8]
    assert np.allclose(t.column("teacher_logit").to_numpy(), [1.0, 0.6, 2.0])
    assert store.scan("missing") == ([], [])


def test_a_failed_write_leaves_no_file_and_writers_never_share_a_name(tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    from recdistill.signals.blocks import temp_name, write_block_file

    fs, path = pafs.LocalFileSystem(), str(tmp_path / "part-r0000-000000.parquet")
    with pytest.raises(AttributeError):
        write_block_file(fs, path, "not a table")  # type: ignore[arg-type]  # fails after the file is opened
    assert list(tmp_path.iterdir()) == []
    store = SignalStore(str(tmp_path / "s"))
    (tmp_path / "s" / "x" / "taken" / "inside").mkdir(parents=True)
    with pytest.raises(OSError):  # written whole, then its move onto a directory fails
        store.write_json(f"{store.root}/x/taken", {"a": 1})
    assert [p.name for p in (tmp_path / "s").rglob("*") if p.is_file()] == []
    assert len({temp_name(path) for _ in range(50)}) == 50


def test_join_reads_every_window_the_teacher_recorded(tmp_path: Path) -> None:
    """A teacher reused at an earlier history cut: the students' window now holds rows the
    teacher recorded as history (window 0). Joined with both windows' blocks, as the distill
    stream does, every row finds its logit; with the window's blocks alone, only those do."""
    import pyarrow as pa

    from recdistill.data.schema import ROW_ID
    from recdistill.signals.join import coverage, join_signals
    from recdistill.signals.kinds import LOGIT

    store = SignalStore(str(tmp_path / "s"))
    history = store.write_block("k", 0, 0, 0, 0, np.arange(0, 10), np.arange(0, 10, dtype=np.float32))
    window = store.write_block("k", 0, 1, 0, 0, np.arange(10, 20), np.arange(10, 20, dtype=np.float32))
    rows = pa.table({ROW_ID: pa.array(np.arange(5, 20), pa.int64())})  # the later cut's window: rows 5..19
    both = join_signals(rows, store.uri, [history.to_dict(), window.to_dict()])
    assert coverage(both) == {"rows": 15, "with_signal": 15}
    assert both.column(LOGIT).to_pylist() == [float(i) for i in range(5, 20)]
    assert coverage(join_signals(rows, store.uri, [window.to_dict()])) == {"rows": 15, "with_signal": 10}


def test_hub_index_wait_and_restart(tmp_path: Path, ray_local) -> None:
    uri = str(tmp_path / "store")
    store = SignalStore(uri)
    hub = get_hub("test-hub", uri, max_restarts=2)
    meta = store.write_block("k", 0, 1, 0, 0, np.arange(10), np.zeros(10, np.float32))
    ray.get(hub.register.remote([meta.to_dict()]))
    assert ray.get(hub.wait.remote("k", 0, 1, 0.2)) is None  # not complete yet: times out
    waiter = hub.wait.remote("k", 0, 1, 30.0)  # a student waiting for the window
    time.sleep(0.2)
    assert ray.get(hub.mark_complete.remote("k", 0, 1)) == {"rows": 10, "blocks": 1}
    assert [b["rows"] for b in ray.get(waiter)] == [10]

    old_pid = ray.get(hub.ping.remote())["pid"]
    ray.kill(hub, no_restart=False)  # a crash: Ray restarts the actor, its memory is gone
    # ray.kill is asynchronous: the dying instance can still answer a ping, so wait for
    # an answer from a new process.
    deadline = time.time() + 30
    while True:
        try:
            info = ray.get(hub.ping.remote(), timeout=5)
            if info["pid"] != old_pid:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.time() < deadline, "the hub did not come back after a kill"
        time.sleep(0.2)
    assert info["restarted"] is True
    assert [b["path"] for b in ray.get(hub.blocks.remote("k", 0, 1))] == [meta.path]  # rebuilt from the store
    assert ray.get(hub.complete.remote("k", 0, 1)) == {"rows": 10, "blocks": 1}
    ray.kill(hub)
