"""The data path through Ray: open the log, split by time, window, preprocess, fit a vocabulary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recdistill.config import load_config
from recdistill.data.log import ensure_synthetic, open_log
from recdistill.engine.prepare import prepare_log
from recdistill.data.preprocess import FIRST_ID, MISSING, OOV, build_preprocessor, fit_vocab
from recdistill.data.synthetic import manifest_problem
from recdistill.data.windows import WINDOW, time_splits, with_windows

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run")
    return load_config(None, ["data.rows=12000", "data.days=3", "data.shard_rows=5000",
                              "data.synthetic.num_users=2000", "data.synthetic.max_cardinality=20000",
                              f"run.dir={out}"])


def _rows(ds) -> pa.Table:
    return pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))


def test_synthetic_cache_reuses_only_identical_logs(cfg, tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert ensure_synthetic(cfg.data, out) is True
    stamp = (out / "part-00000.parquet").stat().st_mtime_ns
    assert ensure_synthetic(cfg.data, out) is False
    assert (out / "part-00000.parquet").stat().st_mtime_ns == stamp
    other = load_config(None, ["data.rows=12000", "data.days=3", "data.seed=7"]).data
    assert ensure_synthetic(other, out) is True
    # a shard lost after the fact: the log no longer matches its manifest and is written again
    (out / "part-00000.parquet").unlink()
    assert ensure_synthetic(other, out) is True
    assert manifest_problem(out) is None


def test_time_splits_windows_and_preprocessing(cfg, ray_local) -> None:
    ds, schema = open_log(cfg)
    splits = time_splits(ds, schema.order_column, cfg.data.splits)
    parts = {k: _rows(v) for k, v in splits.items()}
    sizes = {k: t.num_rows for k, t in parts.items()}
    assert sum(sizes.values()) == 12000
    assert abs(sizes["train"] - 9600) < 300 and abs(sizes["test"] - 1200) < 300, sizes
    assert parts["train"].column("ts").to_numpy().max() <= parts["valid"].column("ts").to_numpy().min()
    assert parts["valid"].column("ts").to_numpy().max() <= parts["test"].column("ts").to_numpy().min()

    windowed, bounds = with_windows(splits["train"], schema.order_column, 4)
    t = _rows(windowed)
    counts = np.bincount(t.column(WINDOW).to_numpy(), minlength=4)
    assert len(bounds) == 3 and counts.min() > 0.2 * t.num_rows, counts

    prepared = prepare_log(cfg)
    pre = prepared.preprocessor
    enc = _rows(prepared.splits["test"])
    assert enc.num_rows == sizes["test"]
    assert prepared.rejects().rejected == 0
    for name in schema.categorical:
        codes = enc.column(name).to_numpy()
        assert codes.min() >= FIRST_ID and codes.max() < pre.buckets[name], name
    for name in schema.dense:
        x = enc.column(name).to_numpy()
        assert x.dtype == np.float32 and np.isfinite(x).all(), name
    hist = enc.column("hist_item_id")
    flat = hist.combine_chunks().flatten().to_numpy()
    assert flat.size and flat.min() >= FIRST_ID and flat.max() < pre.buckets["item_id"]
    assert "p_true" in enc.column_names and "label" in enc.column_names


def test_hash_encoding_of_strings_is_stable_and_marks_missing() -> None:
    from recdistill.data.formats import schema_for

    schema = schema_for("criteo")
    data = load_config(None, ["data.hash_buckets=1000"]).data
    pre = build_preprocessor(schema, data)
    cols = {"row_id": pa.array([1, 2, 3], pa.int64()), "label": pa.array([0, 1, 0], pa.int8())}
    cols |= {n: pa.array([1.0, None, -3.0], pa.float32()) for n in schema.dense}
    cols |= {n: pa.array(["68fd1e64", None, "68fd1e64"]) for n in schema.categorical}
    out = pre(pa.table(cols))
    c1 = out.column("C1").to_numpy()
    assert c1[0] == c1[2] != MISSING and c1[1] == MISSING and FIRST_ID <= c1[0] < 1000
    i1 = out.column("I1").to_numpy()
    assert i1[0] == pytest.approx(np.log1p(1.0)) and i1[1] == 0.0 and i1[2] == pytest.approx(-np.log1p(3.0))


def test_vocab_fit_min_count_and_oov(ray_local) -> None:
    import ray

    from recdistill.data.schema import LogSchema

    schema = LogSchema(dense=(), categorical=("a",))
    values = ["x"] * 5 + ["y"] * 3 + ["z"] * 1 + [None]
    ds = ray.data.from_arrow(pa.table({"row_id": pa.array(range(10), pa.int64()),
                                       "label": pa.array([0] * 10, pa.int8()), "a": values}))
    vocab = fit_vocab(ds, schema, min_count=2)
    assert list(vocab["a"]) == ["x", "y"]
    data = load_config(None, ["data.encoding=vocab"]).data
    pre = build_preprocessor(schema, data, vocab)
    codes = pre(pa.table({"a": pa.array(["y", "x", "z", None, "never"])})).column("a").to_pylist()
    assert codes == [FIRST_ID + 1, FIRST_ID, OOV, MISSING, OOV]
    assert pre.buckets["a"] == 2 + FIRST_ID


def test_cli_synth_then_inspect(tmp_path: Path, ray_local, capsys: pytest.CaptureFixture[str]) -> None:
    # in this process (its Ray is the module's): the command line's own code, without a
    # second Ray start; the entry point as a process is checked last
    from recdistill.cli import main

    out = tmp_path / "log"
    assert main(["synth", "--rows", "4000", "--days", "2", "--out", str(out), "--quiet",
                 "data.synthetic.num_users=500", "data.synthetic.max_cardinality=5000"]) == 0
    printed = capsys.readouterr().out
    assert "oracle AUC" in printed and "CTR by day" in printed
    assert main(["data", "inspect", str(out), "--format", "parquet"]) == 0
    printed = capsys.readouterr().out
    assert "rows            4,000" in printed and "C26" in printed and "rejected rows   0" in printed
    exe = [sys.executable, "-m", "recdistill.cli"]
    bad = subprocess.run([*exe, "synth", "--rows", "10", "data.rowz=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown key 'data.rowz'" in bad.stderr


def test_row_order_splits_across_files_are_exact(tmp_path: Path, ray_local) -> None:
    """Criteo has no time: splits follow file order, then line, and land on exact lines."""
    from recdistill.data.datasource import read_log
    from recdistill.data.windows import boundaries

    for k, n in enumerate((300, 700)):
        lines = ["\t".join([str(i % 2)] + [str(i)] * 13 + ["abc"] * 26) for i in range(n)]
        (tmp_path / f"day{k}.txt").write_text("\n".join(lines) + "\n")
    ds, schema = read_log(str(tmp_path), "criteo")
    assert schema.order_column == "row_id"
    cuts = boundaries(ds, "row_id", [0.25, 0.5])
    assert cuts == [float(251), float((1 << 40) | 201)]  # first rows of the 2nd and 3rd parts
    parts = {k: _rows(v).num_rows for k, v in time_splits(ds, "row_id", [0.25, 0.25, 0.5]).items()}
    assert parts == {"train": 250, "valid": 250, "test": 500}


def test_cli_inspect_reports_rejects_and_fails_past_budget(tmp_path: Path, ray_local,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """In this process, on the module's Ray (test_cli_synth_then_inspect runs the installed
    entry point as a subprocess; each of those starts a Ray of its own, ~10 s here)."""
    from recdistill.cli import main

    good = "\t".join(["1"] + ["3"] * 13 + ["68fd1e64"] * 26)
    path = tmp_path / "log.txt"
    path.write_text("\n".join([good] * 8 + ["1\t2\t3", good]) + "\n")  # line 9 is short
    assert main(["data", "inspect", str(path), "--format", "criteo", "--error-budget", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "rows            9" in out and "wrong field count" in out
    assert main(["data", "inspect", str(path), "--format", "criteo"]) == 2
    err = capsys.readouterr().err
    assert "data error" in err and str(path) in err and "9" in err
    assert main(["data", "inspect", str(tmp_path / "nope.txt"), "--format", "criteo"]) == 2
    assert "does not exist" in capsys.readouterr().err
