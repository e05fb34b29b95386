"""The signal store as data with a lifecycle: generations per training, atomic records,
a lease per teacher key, and a window spool that no one can turn into code execution.
Pure: no Ray."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from recdistill.data.schema import LogSchema
from recdistill.online.spool import DONE, committed_spool
from recdistill.signals.lease import holder, reuse_or_lease, try_acquire
from recdistill.signals.store import SignalStore, new_generation, signal_id


def _train(store: SignalStore, key: str, logits: float, rows: np.ndarray) -> str:
    """What a teacher run does to the store: blocks into a fresh generation, then commit."""
    gen = new_generation()
    sid = signal_id(key, gen)
    store.write_block(sid, 0, 1, 0, 0, rows, np.full(len(rows), logits, np.float32))
    store.mark_complete(sid, 0, 1, rows=len(rows), blocks=1)
    store.write_teacher(key, {"key": key, "generation": gen})
    return sid


def test_a_retrained_key_never_mixes_with_its_earlier_blocks(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    # a crashed first training: blocks, no commit (other block size: more, smaller blocks)
    crashed = signal_id("k", new_generation())
    for seq in range(3):
        store.write_block(crashed, 0, 1, 0, seq, np.arange(seq * 4, seq * 4 + 4), np.zeros(4, np.float32))
    assert store.teacher_info("k") is None and store.committed("k") is None
    sid = _train(store, "k", 1.0, np.arange(12))
    assert store.committed("k") == sid
    blocks, complete = store.scan(sid)
    assert [b.rows for b in blocks] == [12] and complete == [(0, 1)]
    t = store.read_range(blocks, 0, 11)
    assert t.num_rows == 12 and np.all(t.column("teacher_logit").to_numpy() == 1.0)  # no duplicate row ids
    assert store.remove_generations("k", {sid.split("/")[1]}) == [crashed.split("/")[1]]
    assert store.scan(crashed) == ([], [])


def test_a_record_of_the_old_layout_is_not_reused(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    store.fs.create_dir(f"{store.root}/k")
    Path(store.root, "k", "teacher.json").write_text(json.dumps({"key": "k", "auc": 0.7}))  # no generation
    assert store.teacher_info("k") is None
    with pytest.raises(ValueError, match="generation"):
        store.write_teacher("k", {"key": "k"})
    Path(store.root, "k", "teacher.json").write_text("{half a rec")
    with pytest.raises(ValueError, match="teacher.json is not valid JSON"):
        store.teacher_info("k")


def test_records_are_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that dies before its rename leaves the previous record, never half of one."""
    store = SignalStore(str(tmp_path / "s"))
    gen = new_generation()
    store.write_teacher("k", {"key": "k", "generation": gen, "auc": 0.7})

    class Died(Exception):
        pass

    def die(*_: object) -> None:
        raise Died

    monkeypatch.setattr(store, "fs", _Wrap(store.fs, move=die))
    for write in (lambda: store.write_teacher("k", {"key": "k", "generation": new_generation(), "auc": 0.8}),
                  lambda: store.mark_complete(signal_id("k", gen), 0, 1, rows=3, blocks=1),
                  lambda: store.write_raw_result("r", {"auc": 0.6})):
        with pytest.raises(Died):
            write()
    monkeypatch.undo()
    assert store.teacher_info("k") == {"key": "k", "generation": gen, "auc": 0.7}
    assert store.completion(signal_id("k", gen), 0, 1) is None
    assert store.raw_result("r") is None


def test_a_block_replaced_while_it_is_read_reads_as_one_version(tmp_path: Path) -> None:
    """A resumed teacher rewrites its blocks under their own names while students read them.
    Every read, of the footer (scan) and of the values, sees one whole version: in one thread
    a writer replaces the block again and again (other sizes, other values); in this one a
    reader scans and reads it. (Through ``pq.read_table(path)`` about one read in ten failed
    or mixed two files: footer and pages come from two opens.)"""
    import threading

    store = SignalStore(str(tmp_path / "s"))
    sizes = np.random.default_rng(0).integers(200, 3000, 64)
    store.write_block("k", 0, 1, 0, 0, np.arange(sizes[0]), np.zeros(sizes[0], np.float32))
    stop, rewrites = threading.Event(), [0]

    def rewrite() -> None:
        while not stop.is_set():
            i = rewrites[0] = rewrites[0] + 1
            n = int(sizes[i % len(sizes)])
            store.write_block("k", 0, 1, 0, 0, np.arange(n), np.random.default_rng(i).normal(size=n).astype(np.float32))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        reads = 0
        while reads < 300 or rewrites[0] < 100:
            blocks, _ = store.scan("k")
            t = store.read_range(blocks, 0, 10**6)
            rows = t.column("row_id").to_numpy()
            assert (rows == np.arange(len(rows))).all()  # one version's rows, whole
            reads += 1
    finally:
        stop.set()
        writer.join()


class _Wrap:
    """The store's filesystem with one method replaced (to stop a writer at a chosen point)."""

    def __init__(self, fs: pafs.FileSystem, **replace: object) -> None:
        self._fs, self._replace = fs, replace

    def __getattr__(self, name: str) -> object:
        return self._replace.get(name) or getattr(self._fs, name)


def test_lease_is_exclusive_expires_and_is_taken_over_once(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    first = try_acquire(store, "k", "run-a", ttl_s=30)
    assert first is not None and holder(store, "k")["owner"] == "run-a"
    assert try_acquire(store, "k", "run-b", ttl_s=30) is None
    first.release()
    assert holder(store, "k") is None

    stale = try_acquire(store, "k", "run-a", ttl_s=0.3)  # a driver that dies: it stops renewing
    stale._stop.set()
    stale._thread.join()
    time.sleep(0.4)
    taker = try_acquire(store, "k", "run-b", ttl_s=30)
    assert taker is not None and holder(store, "k")["owner"] == "run-b"
    assert not stale.held()
    stale.release()  # the old holder gives back nothing that is no longer its own
    assert holder(store, "k")["owner"] == "run-b"
    taker.release()


def test_lease_holder_renews_and_a_waiter_reads_the_signals_instead(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "s"))
    lease = try_acquire(store, "k", "run-a", ttl_s=0.6)
    time.sleep(1.2)  # two ttl's: alive only because the holder renews it
    assert try_acquire(store, "k", "run-b", ttl_s=0.6) is None
    done = {"v": False}
    lines: list[str] = []

    def stored() -> str | None:
        if not done["v"] and lease.held():
            _train(store, "k", 0.5, np.arange(4))  # the holder commits while run-b waits
            done["v"] = True
            lease.release()
        return store.committed("k")

    found, got = reuse_or_lease(store, "k", "run-b", 0.6, 0.05, stored, lines.append, timeout_s=10)
    assert got is None and found == store.committed("k") is not None
    assert holder(store, "k") is None


_CONTEND = """
import os, sys, time
from recdistill.signals.lease import try_acquire
from recdistill.signals.store import SignalStore
root, go, done, ready = sys.argv[1:5]
store = SignalStore(root)
open(ready, "w").close()
while not os.path.exists(go):  # every process imported and waiting: they all try at once
    time.sleep(0.001)
lease = try_acquire(store, "k", f"pid-{os.getpid()}", ttl_s=30)
print("won" if lease else "lost", flush=True)
while not os.path.exists(done):  # the winner keeps it until every process has tried
    time.sleep(0.01)
if lease:
    lease.release()
"""


def test_one_of_many_processes_wins_the_lease(tmp_path: Path) -> None:
    go, done = tmp_path / "go", tmp_path / "done"
    ready = [tmp_path / f"ready-{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", _CONTEND, str(tmp_path / "s"), str(go), str(done), str(r)],
                              stdout=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready):  # every process has imported and waits at the start line
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a contender did not start"
        time.sleep(0.01)
    go.touch()
    answers = [p.stdout.readline().strip() for p in procs]
    done.touch()
    for p in procs:
        p.wait(timeout=30)
    assert sorted(answers) == ["lost", "lost", "lost", "won"]


class _Payload:
    def __reduce__(self) -> tuple:
        return (Path.write_text, (Path(_MARKER[0]), "code ran"))


_MARKER: list[str] = [""]


def test_a_planted_pickle_in_the_spool_never_runs(tmp_path: Path) -> None:
    """The spool's schema was a pickle: whoever could write the store ran code in every
    reader. Now the record is JSON; a planted pickle beside it is never read."""
    marker = tmp_path / "pwned"
    _MARKER[0] = str(marker)
    store = SignalStore(str(tmp_path / "s"))
    base = f"{store.root}/_windows/abc"
    store.fs.create_dir(base)
    Path(base, "_schema.pkl").write_bytes(pickle.dumps(_Payload()))
    schema = LogSchema(dense=("I1",), categorical=("C1",), source="synthetic")
    gen = new_generation()
    store.write_json(f"{base}/{DONE}", {"generation": gen, "rows": [5, 5], "bounds": [3],
                                        "schema": json.loads(schema.to_json()), "buckets": {"C1": 7}})
    spool = committed_spool(store, f"{base}/{DONE}", base)
    assert spool is not None and spool.schema == schema and spool.buckets == {"C1": 7}
    assert spool.uri == f"{base}/{gen}" and spool.rows == [5, 5]
    assert not marker.exists()
    # a record that is not ours: a clear error naming it, not a crash deep in the run
    Path(base, DONE).write_text(json.dumps({"rows": [1]}))
    with pytest.raises(ValueError, match="not a recdistill spool record"):
        committed_spool(store, f"{base}/{DONE}", base)
    pickle.loads(pickle.dumps(_Payload()))  # the payload is live: loading it would have run it
    assert marker.exists()
