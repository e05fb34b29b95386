"""``teacher.signals``: forward, crossfit:K and posthoc signals (issue 18) — the folds, the
keys, the config rules, each mode on the single-process engine, and crossfit on Ray against it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recdistill.config import ConfigError, load_config
from recdistill.data.folds import fold_of, fold_score_rows, fold_train_rows
from recdistill.data.schema import ROW_ID
from recdistill.data.windows import HISTORY, STUDENT_WINDOW, WINDOW
from recdistill.train.keys import teacher_key


def test_folds_partition_the_window_and_never_train_on_what_they_score() -> None:
    ids = np.arange(20_000, dtype=np.int64) * 7 + 3
    batch = pa.table({ROW_ID: ids, WINDOW: np.where(ids % 3 == 0, HISTORY, STUDENT_WINDOW).astype(np.int8)})
    k = 4
    f = fold_of(ids, k)
    assert f.min() == 0 and f.max() == k - 1 and np.array_equal(f, fold_of(ids[::-1], k)[::-1])  # a row's own
    assert np.all(np.abs(np.bincount(f) / len(ids) - 1 / k) < 0.02)
    scored = []
    for j in range(k):
        train = set(fold_train_rows(batch, j, k).column(ROW_ID).to_numpy())
        score = set(fold_score_rows(batch, j, k).column(ROW_ID).to_numpy())
        assert not train & score  # the teacher of fold j never trained on a row it scores
        history = set(ids[ids % 3 == 0])
        assert history <= train and not history & score
        assert train | score == set(ids)
        scored.append(score)
    window = set(ids[ids % 3 != 0])
    assert set().union(*scored) == window and sum(len(s) for s in scored) == len(window)  # each row once


def test_the_signal_mode_is_part_of_the_teacher_key_and_checked() -> None:
    keys = {m: teacher_key(load_config(None, [f"teacher.signals={m}"]))
            for m in ("forward", "posthoc", "crossfit", "crossfit:5", "crossfit:3")}
    assert keys["crossfit"] == keys["crossfit:5"]
    assert len({keys[m] for m in ("forward", "posthoc", "crossfit:5", "crossfit:3")}) == 4
    assert keys["forward"] == teacher_key(load_config(None, []))
    for bad in ("crossfit:1", "crossfit:x", "forwards", "posthoc:2"):
        with pytest.raises(ConfigError, match="teacher.signals"):
            load_config(None, [f"teacher.signals={bad}"])
    with pytest.raises(ConfigError, match="online pipeline takes forward"):
        load_config(None, ["teacher.signals=posthoc", "stream.enabled=true"])


TINY = ["data.rows=12000", "data.days=2", "data.synthetic.num_users=1000", "data.synthetic.max_cardinality=5000",
        "teacher.depth=1", "teacher.width=16", "teacher.embed_dim=4", "teacher.batch_size=512", "teacher.epochs=2",
        "teacher.patience=0", "students.0.embed_dim=4", "students.0.width=8", "students.0.depth=1",
        "students.0.batch_size=512", "students.0.epochs=1", "students.0.sampling_ratio=0.25",
        "students.0.unlabelled.share=1.0", "run.engine=local", "run.serving=off", "tracking.wandb=disabled"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    from recdistill.experiment import run_experiment

    tmp = tmp_path_factory.mktemp("modes")
    for m in MODES:
        run_experiment(load_config(None, [*TINY, f"teacher.signals={m}", f"data.path={tmp / 'data'}",
                                          f"run.dir={tmp / m.replace(':', '')}"]), log=lambda _: None)
    return tmp


MODES = ("forward", "crossfit:2", "posthoc")


def _results(runs: Path, mode: str) -> dict:
    return json.loads((runs / mode.replace(":", "") / "results.json").read_text())


def test_each_mode_gives_every_window_row_a_signal_and_reports_its_gauge(runs: Path) -> None:
    fw, cf, ph = (_results(runs, m)["teacher"] for m in MODES)
    window = fw["signal_rows"]["window"]
    assert cf["signal_rows"] == {"history": 0, "window": window}  # crossfit scores the window only
    assert ph["signal_rows"] == fw["signal_rows"]  # posthoc: every train row (the teacher samples all here)
    assert len(cf["folds"]) == 2 and sum(f["signal_rows"] for f in cf["folds"]) == window
    # η's teacher: crossfit's is the mean of its fold teachers, which each trained on fewer rows
    assert cf["auc"] == pytest.approx(np.mean([f["auc"] for f in cf["folds"]]))
    assert cf["steps"] == sum(f["steps"] for f in cf["folds"]) > fw["steps"]
    # posthoc's teacher is the one that scored: the forward teacher as trained on to its end
    assert ph["auc"] == pytest.approx(fw["final"]["auc"], abs=1e-9) and "final" not in ph
    for m in MODES:
        r = _results(runs, m)
        t = r["teacher"]
        assert t["signals"] == m.split(":")[0]
        assert t["leakage_gap"] == pytest.approx(t["signal_auc_window"] - t["auc"])
        s = r["students"][0]
        assert s["signal_coverage"] == 1.0 and s["unlabelled_rows"] > 0
    text = {m: (runs / m.replace(":", "") / "report.md").read_text() for m in MODES}
    assert "Leakage gauge" in text["forward"] and "leaky by construction" in text["posthoc"]
    assert "Fold teachers (crossfit)" in text["crossfit:2"] and "unlabelled" in text["forward"]


def test_crossfit_on_ray_equals_the_local_engine(runs: Path) -> None:
    """crossfit:2 on Ray: a Train run per fold teacher (one at a time on one CPU node), each
    scoring its held-out fold into the store under its own ranks after training; the
    signals, the fold teachers and the students as on the local engine."""
    from recdistill.experiment import run_experiment

    said: list[str] = []
    ray_run = run_experiment(load_config(None, [
        *TINY, "run.engine=ray", "teacher.signals=crossfit:2", "platform.cpus_per_worker=0.5",
        f"data.path={runs / 'data'}", f"platform.signal_store={runs / 'store'}", f"run.dir={runs / 'crossfit-ray'}"]),
        log=said.append)
    assert any("2 fold teachers, 1 at a time" in line for line in said), said
    local = _results(runs, "crossfit:2")
    t, lt = ray_run["teacher"], local["teacher"]
    assert t["auc"] == pytest.approx(lt["auc"], abs=1e-3)
    assert ray_run["platform"]["teacher_steps"] == t["steps"] == lt["steps"] == sum(f["steps"] for f in t["folds"])
    assert t["signal_rows"] == lt["signal_rows"] and t["signal_rows"]["history"] == 0
    for a, b in zip(t["folds"], lt["folds"]):
        assert a["signal_rows"] == b["signal_rows"] and a["auc"] == pytest.approx(b["auc"], abs=1e-3)
        assert a["signal_auc_window"] == pytest.approx(b["signal_auc_window"], abs=1e-3)
    assert t["leakage_gap"] == pytest.approx(lt["leakage_gap"], abs=1e-3)
    p = ray_run["platform"]
    assert p["stream_rows"] == p["stream_rows_with_signal"] > 0  # every window row scored by a fold
    s, ls = ray_run["students"][0], local["students"][0]
    assert s["unlabelled_rows"] == ls["unlabelled_rows"] > 0 and s["rows"] == ls["rows"]
    for k in ("auc_raw", "auc_distill"):
        assert s[k] == pytest.approx(ls[k], abs=1e-3), k


def test_fold_teachers_run_at_once_only_where_they_do_not_share_cores() -> None:
    from recdistill.engine.teacher import fold_concurrency

    cfg = load_config(None, ["teacher.signals=crossfit:5", "platform.cpus_per_worker=0.5"])
    assert fold_concurrency(cfg, cpus=2, gpus=0, nodes=1) == 1  # CPU workers use every core of their node
    assert fold_concurrency(cfg, cpus=32, gpus=0, nodes=4) == 4  # one per node
    assert fold_concurrency(cfg, cpus=1, gpus=0, nodes=1) == 1  # never below one
    assert fold_concurrency(cfg, cpus=64, gpus=8, nodes=1) == 5  # a GPU each: all five at once
    assert fold_concurrency(cfg, cpus=64, gpus=2, nodes=1) == 2
    two = load_config(None, ["teacher.signals=crossfit:5", "platform.teacher_workers=2", "platform.gpus_per_worker=0.5"])
    # a DDP teacher's ranks take a whole GPU each whatever the share (NCCL joins no two on one device)
    assert fold_concurrency(two, cpus=64, gpus=2, nodes=1) == 1
    assert fold_concurrency(two, cpus=64, gpus=8, nodes=1) == 4
    one = load_config(None, ["teacher.signals=crossfit:5", "platform.gpus_per_worker=0.5"])
    assert fold_concurrency(one, cpus=64, gpus=2, nodes=1) == 4  # one-worker teachers share a GPU in halves
