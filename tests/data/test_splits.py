"""Splits users bring: data.valid_path / data.test_path, glob file order, OOV on test, data.shuffle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recdistill.config import ConfigError, load_config
from recdistill.data.formats import AVAZU_COLUMNS
from recdistill.data.windows import HISTORY, STUDENT_WINDOW, WINDOW, permuted_ids, resolve_shuffle
from recdistill.train.keys import _file_fingerprint, teacher_key

pytestmark = pytest.mark.timeout(240)
LINE = 1 << 40


# ----------------------------------------------------------------- fixtures (tiny files)


def criteo_line(label: int, c1: str, n: int) -> str:
    """One Criteo TSV row; C1 carries ``c1`` (the id the OOV test is about), the rest vary with ``n``."""
    dense = [str((n * 7 + i) % 50) for i in range(13)]
    cats = [c1] + [f"{(n + i) % 5:08x}" for i in range(1, 26)]
    return "\t".join([str(label), *dense, *cats])


def write_criteo(path: Path, rows: int, start: int, c1: str = "aaaa0000") -> Path:
    path.write_text("".join(criteo_line(int((start + i) % 3 == 0), c1 if i % 2 else f"{i % 4:08x}", start + i) + "\n"
                            for i in range(rows)))
    return path


def avazu_line(click: int, hour: int, site: str) -> str:
    return ",".join([str(1000 + hour), str(click), str(hour), "1005", "0", site, "f3845767", "28905ebd",
                     "ecad2386", "7801e8d9", "07d7df22", "a99f214a", "ddd2926e", "44956a24", "1", "2",
                     "15706", "320", "50", "1722", "0", "35", "-1", "79"])


def criteo_cfg(tmp_path: Path, *over: str):
    return load_config(None, ["data.source=criteo", f"data.path={tmp_path}/train-*.txt",
                              "data.encoding=vocab", "data.min_count=1", f"run.dir={tmp_path / 'run'}", *over])


# ----------------------------------------------------------------- pure


def test_shuffle_auto_follows_the_time_column() -> None:
    assert resolve_shuffle("auto", has_ts=True) == "none"
    assert resolve_shuffle("auto", has_ts=False) == "window"
    assert resolve_shuffle("global", has_ts=True) == "global"
    with pytest.raises(ValueError, match="data.shuffle='sometimes'"):
        resolve_shuffle("sometimes", has_ts=False)


def test_permuted_ids_are_a_seeded_bijection_in_window_order() -> None:
    # ids as readers write them: several files, lines 1..n each
    ids = np.concatenate([(np.int64(f) << 40) | np.arange(1, 20001, dtype=np.int64) for f in (0, 1, 7)])
    window = (np.arange(ids.size) >= ids.size // 2).astype(np.int32)
    new = permuted_ids(ids, window, "window", seed=3)
    assert np.unique(new).size == ids.size  # never two rows on one id
    assert (new < 0).all()  # below every reader id, so never equal to a valid/test id
    order = np.argsort(new)
    assert (np.diff(window[order]) >= 0).all()  # history first, then the students' window
    assert np.array_equal(new, permuted_ids(ids, window, "window", seed=3))  # deterministic
    other = permuted_ids(ids, window, "window", seed=4)
    assert not np.array_equal(np.argsort(other), order)
    # shuffled, not log order: the rank correlation with the file/line order is ~0 within a window
    hist = order[: ids.size // 2]
    assert abs(np.corrcoef(hist, np.arange(hist.size))[0, 1]) < 0.05
    # global: the windows interleave
    g = window[np.argsort(permuted_ids(ids, window, "global", seed=3))]
    assert 0.4 < g[: g.size // 2].mean() < 0.6
    with pytest.raises(ValueError, match="outside"):
        permuted_ids(np.array([1 << 62]), np.array([0]), "window", 0)


def test_split_paths_config_rules(tmp_path: Path) -> None:
    from recdistill.data.log import _path_cut

    cfg = criteo_cfg(tmp_path, f"data.test_path={tmp_path}/t.txt")
    share, parts, sources = _path_cut(cfg.data)
    assert parts == ("train", "valid") and share == pytest.approx(0.8 / 0.9)
    assert sources == {"train": "data.path", "valid": "data.path", "test": "data.test_path"}
    cfg = criteo_cfg(tmp_path, f"data.valid_path={tmp_path}/v.txt", "data.splits=[0.6,0.1,0.3]")
    share, parts, _ = _path_cut(cfg.data)
    assert parts == ("train", "test") and share == pytest.approx(0.6 / 0.9)
    cfg = criteo_cfg(tmp_path, f"data.valid_path={tmp_path}/v.txt", f"data.test_path={tmp_path}/t.txt")
    assert _path_cut(cfg.data)[:2] == (1.0, ("train", ""))
    with pytest.raises(ConfigError, match="valid_path / data.test_path need a real log"):
        load_config(None, [f"data.test_path={tmp_path}/t.txt"])


def test_teacher_key_fingerprints_split_files_and_glob_matches(tmp_path: Path) -> None:
    write_criteo(tmp_path / "train-a.txt", 10, 0)
    write_criteo(tmp_path / "train-b.txt", 10, 10)
    test = write_criteo(tmp_path / "test.txt", 5, 100)
    fp = _file_fingerprint(f"{tmp_path}/train-*.txt")
    assert [Path(p).name for p, _, _ in fp] == ["train-a.txt", "train-b.txt"]
    cfg = criteo_cfg(tmp_path, f"data.test_path={test}")
    before = teacher_key(cfg)
    write_criteo(test, 6, 100)  # the test file changed: the teacher is scored on other rows
    assert teacher_key(cfg) != before
    before = teacher_key(cfg)
    write_criteo(tmp_path / "train-b.txt", 11, 10)  # a file matched by the glob changed
    assert teacher_key(cfg) != before


# ----------------------------------------------------------------- through Ray


def _table(ds) -> pa.Table:
    return pa.concat_tables([b for b in ds.iter_batches(batch_format="pyarrow", batch_size=None)])


def test_criteo_glob_with_valid_and_test_files(tmp_path: Path, ray_local) -> None:
    from recdistill.engine.prepare import prepare_log
    from recdistill.data.preprocess import OOV
    from recdistill.data.schema import ROW_ID
    from recdistill.data.tensors import collect

    # named so that sorted-by-name is not the order they were written in
    write_criteo(tmp_path / "train-b.txt", 300, 300, c1="bbbb0000")
    write_criteo(tmp_path / "train-a.txt", 300, 0, c1="aaaa0000")
    write_criteo(tmp_path / "valid.txt", 40, 600)
    # test: C1 is a value train never had on every other row → exactly 20 OOV rows in C1
    write_criteo(tmp_path / "test.txt", 40, 700, c1="ffff9999")
    cfg = criteo_cfg(tmp_path, f"data.valid_path={tmp_path}/valid.txt", f"data.test_path={tmp_path}/test.txt",
                     "data.seed=5")
    prepared = prepare_log(cfg)
    assert prepared.shuffle == "window"  # Criteo has no time column
    valid, test = _table(prepared.splits["valid"]), _table(prepared.splits["test"])
    assert valid.num_rows == 40 and test.num_rows == 40
    # files numbered train-a, train-b (sorted by name), then valid, then test: ids never meet
    assert set(valid.column(ROW_ID).to_numpy() >> 40) == {2}
    assert set(test.column(ROW_ID).to_numpy() >> 40) == {3}
    train_ds = prepared.splits["train"]  # tagged and ordered by prepare_log
    train = _table(train_ds)
    assert train.num_rows == 600 and np.unique(train.column(ROW_ID).to_numpy()).size == 600
    # the order every engine sees: ascending (permuted) row id, history first
    ids, win = train.column(ROW_ID).to_numpy(), train.column(WINDOW).to_numpy()
    assert (np.diff(ids) > 0).all() and (np.diff(win) >= 0).all()
    assert np.count_nonzero(win == HISTORY) == 300 and np.count_nonzero(win == STUDENT_WINDOW) == 300
    # files are numbered by name: train-a's rows are the history (window 0), train-b's the window
    c1 = prepared.preprocessor.fields["C1"].vocab
    code = {v: c1.get_loc(v) + 2 for v in ("aaaa0000", "bbbb0000")}
    hist_c1 = train.column("C1").to_numpy()[win == HISTORY]
    assert (hist_c1 == code["aaaa0000"]).sum() == 150 and (hist_c1 == code["bbbb0000"]).sum() == 0
    local = collect(train_ds, prepared.schema, 0)
    assert np.array_equal(local.row_id.numpy(), ids)  # local engine's order = Ray's
    info = prepared.describe()
    assert info["shuffle"] == "window"
    assert info["oov_test"]["rows"] == 40 and info["oov_test"]["fields"]["C1"] == 20
    assert info["oov_test"]["fields"]["C1"] == int(np.count_nonzero(test.column("C1").to_numpy() == OOV))
    assert info["oov_test"]["fields"]["C2"] == 0


def test_shuffle_strategy_auto_is_the_pull_based_sort_on_one_node_only() -> None:
    from recdistill.data.shuffle_strategy import choose

    assert choose("auto", 1, "shuffle_v2") == "sort_shuffle_pull_based"
    assert choose("auto", 3, "shuffle_v2") == "shuffle_v2"
    assert choose("ray", 1, "hash_shuffle") == "hash_shuffle"
    assert choose("sort_shuffle_push_based", 1, "shuffle_v2") == "sort_shuffle_push_based"


def test_the_shuffle_strategy_changes_no_row_code_or_order(tmp_path: Path, ray_local) -> None:
    """The vocabulary's groupby and the window shuffle's sort give the same codes and the
    same training order under the one-node choice and under Ray's own default."""
    from recdistill.engine.prepare import prepare_log

    write_criteo(tmp_path / "train-a.txt", 200, 0)
    write_criteo(tmp_path / "train-b.txt", 200, 200, c1="bbbb0000")
    seen = []
    for strategy in ("auto", "shuffle_v2"):
        prepared = prepare_log(criteo_cfg(tmp_path, f"platform.shuffle_strategy={strategy}", "data.seed=3"))
        assert prepared.splits["train"].context.shuffle_strategy.value == (
            "sort_shuffle_pull_based" if strategy == "auto" else "shuffle_v2")
        seen.append((_table(prepared.splits["train"]), {f: list(p.vocab) for f, p in
                                                        prepared.preprocessor.fields.items() if p.vocab is not None}))
    (a, vocab_a), (b, vocab_b) = seen
    assert vocab_a == vocab_b and {"aaaa0000", "bbbb0000"} <= set(vocab_a["C1"])
    assert a.num_rows > 300 and a.equals(b)


def test_avazu_test_file_only_cuts_path_into_train_and_valid_by_time(tmp_path: Path, ray_local) -> None:
    from recdistill.engine.prepare import prepare_log

    # 27 hours × 8 rows, written newest first: the 8:1 cut (192 rows) falls after hour 24 in time
    hours = [d * 100 + h for d, h in [(141021, h) for h in range(24)] + [(141022, h) for h in range(3)]]
    rows = [avazu_line(i % 2, h, "s1") for i, h in enumerate(hours[::-1] * 8)]
    (tmp_path / "train-1.csv").write_text("\n".join([",".join(AVAZU_COLUMNS), *rows]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(avazu_line(0, 14102203, "new-site") for _ in range(10)) + "\n")
    cfg = load_config(None, ["data.source=avazu", f"data.path={tmp_path}/train-*.csv", "data.encoding=hash",
                             f"data.test_path={tmp_path}/test.csv", f"run.dir={tmp_path / 'run'}"])
    prepared = prepare_log(cfg)
    assert prepared.shuffle == "none"  # a log with time keeps its order
    train, valid = _table(prepared.splits["train"]), _table(prepared.splits["valid"])
    assert train.num_rows == 192 and valid.num_rows == 24  # 8:1 of 216 rows
    assert train.column("ts").to_numpy().max() < valid.column("ts").to_numpy().min()
    # not shuffled: tagged in time order (history = the earliest half), row ids as read
    assert (train.column(WINDOW).to_numpy() == STUDENT_WINDOW).sum() == 96
    oov = prepared.describe()["oov_test"]
    assert oov["rows"] == 10 and "site_id" in oov["hashed_no_oov"] and oov["fields"] == {}


def test_order_values_keep_time_and_split_ties() -> None:
    from recdistill.data.windows import order_values

    ts = np.repeat(np.array([3600, 7200, 10800], np.int64), 1000)
    batch = pa.table({"row_id": np.arange(ts.size, dtype=np.int64), "ts": ts})
    x = order_values(batch, "ts")
    assert (np.floor(x) == ts).all()  # never leaves its tick, so different ticks keep their order
    tick = x[:1000] - 3600
    assert 0.4 < np.mean(tick < 0.5) < 0.6  # a tick's rows spread over it: a cut inside splits them
    assert np.array_equal(order_values(batch, "ts"), x)  # the same on every run
    assert np.array_equal(order_values(batch, "row_id"), batch.column("row_id").to_numpy())


def test_a_log_of_one_hour_still_gets_its_splits_and_history(tmp_path: Path, ray_local) -> None:
    from recdistill.engine.prepare import prepare_log

    # every row in the same hour: time cannot order them (the Avazu sample is like this)
    rows = [avazu_line(int(i % 3 == 0), 14102100, f"s{i % 7}") for i in range(400)]
    (tmp_path / "one-hour.csv").write_text("\n".join([",".join(AVAZU_COLUMNS), *rows]) + "\n")
    cfg = load_config(None, ["data.source=avazu", f"data.path={tmp_path}/one-hour.csv",
                             f"run.dir={tmp_path / 'run'}", f"platform.signal_store={tmp_path / 'store'}"])
    prepared = prepare_log(cfg, log=lambda _: None)
    n = {k: _table(v).num_rows for k, v in prepared.splits.items()}
    assert sum(n.values()) == 400 and 280 < n["train"] < 360 and n["valid"] > 15 and n["test"] > 15
    window = _table(prepared.splits["train"]).column(WINDOW).to_numpy()
    assert 0.35 < np.mean(window == HISTORY) < 0.65  # history_fraction 0.5, not all on one side


def test_a_held_log_gives_the_streamed_logs_splits_and_rejects(tmp_path: Path, ray_local) -> None:
    """platform.hold_log reads the files once into the object store; every split, its row
    order and the reject tally are those of the log streamed from its files at every pass."""
    from recdistill.engine.prepare import prepare_log

    write_criteo(tmp_path / "train-a.txt", 300, 0)
    bad = tmp_path / "train-b.txt"
    write_criteo(bad, 300, 300)
    bad.write_text(bad.read_text() + "1\tnot enough fields\n")  # one reject, counted once
    seen = {}
    for mode in ("no", "yes", "auto"):
        # a store each: the cuts and statistics are computed afresh on the held rows, not
        # read back from the streamed run's memo
        prepared = prepare_log(criteo_cfg(tmp_path, f"platform.hold_log={mode}", "data.seed=3",
                                         "data.error_budget=0.01", f"platform.signal_store={tmp_path}/store-{mode}"))
        seen[mode] = ({k: _table(v) for k, v in prepared.splits.items()}, prepared.rejects().to_dict(),
                      prepared.describe()["hold"])
    for mode in ("yes", "auto"):
        for split, table in seen["no"][0].items():
            assert seen[mode][0][split].equals(table), (mode, split)
        assert seen[mode][1] == seen["no"][1]
    assert seen["no"][1]["rejected"] == 1 and seen["no"][1]["total"] == 601, seen["no"][1]
    assert seen["no"][2]["held"] is False and seen["yes"][2]["held"] is True
    for mode in ("no", "yes", "auto"):
        assert list((tmp_path / f"store-{mode}").iterdir()), mode  # each computed its own cuts
    # a tiny TSV is far under a quarter of the object store: auto holds it
    assert seen["auto"][2]["held"] is True and 0 < seen["auto"][2]["estimated_bytes"] < seen["auto"][2]["budget_bytes"]


def test_the_hold_estimates_memory_by_how_a_file_is_stored(tmp_path: Path) -> None:
    import gzip

    import pyarrow.parquet as pq

    from recdistill.data.hold import COMPRESSED_EXPANSION, TEXT_EXPANSION, estimated_bytes

    text = write_criteo(tmp_path / "a.txt", 200, 0)
    packed = tmp_path / "b.txt.gz"
    packed.write_bytes(gzip.compress(text.read_bytes()))
    assert estimated_bytes([str(text)], "criteo") == int(text.stat().st_size * TEXT_EXPANSION)
    assert estimated_bytes([str(text), str(packed)], "criteo") == int(
        text.stat().st_size * TEXT_EXPANSION + packed.stat().st_size * COMPRESSED_EXPANSION)
    table = pa.table({"x": np.zeros(10_000, dtype=np.int64)})  # compresses to almost nothing
    pq.write_table(table, tmp_path / "c.parquet")
    got = estimated_bytes([str(tmp_path / "c.parquet")], "parquet")
    assert got >= 10_000 * 8  # its size in Arrow, from one row group read
