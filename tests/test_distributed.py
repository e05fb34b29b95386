"""The Ray engine against the single-process engine, signal reuse, gaps and a worker crash.

Real local Ray, real Parquet signal store; one tiny synthetic log shared by the module.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from recdistill.config import load_config
from recdistill.experiment import run_experiment
from recdistill.train.worker import FAIL_ENV

pytestmark = pytest.mark.timeout(300)

TINY = ["data.rows=20000", "data.days=2", "data.synthetic.num_users=2000", "data.synthetic.max_cardinality=20000",
        "teacher.arch=dcnv2", "teacher.depth=1", "teacher.width=32", "teacher.embed_dim=8",
        "students.0.embed_dim=4", "students.0.width=16", "students.0.depth=1", "students.0.batch_size=512",
        "students.1.name=single", "students.1.towers=single", "students.1.embed_dim=4", "students.1.width=16",
        "students.1.depth=1", "students.1.arch=deepfm", "students.1.batch_size=512", "teacher.batch_size=1024",
        # pinned, not sized by the data (sizing.py): one pass each unless a test asks for more
        "teacher.patience=0", "students.0.epochs=1", "students.1.epochs=1", "students.0.eval_every=0",
        "students.1.eval_every=0", "teacher.eval_every=0",
        # the serving cost is measured in the reference run only (an export and a timing per student),
        # and so is its W&B run (_check_tracking): ~2 CPU-s per run saved on a CPU-bound suite
        "run.serving=off", "tracking.wandb=disabled"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distributed")


def _cfg(shared: Path, name: str, *extra: str):
    return load_config(None, [*TINY, f"data.path={shared / 'data'}", f"platform.signal_store={shared / 'store'}",
                              f"run.dir={shared / name}", *extra])


def _close(a: dict, b: dict, tol: float = 1e-3) -> None:
    assert a["teacher"]["auc"] == pytest.approx(b["teacher"]["auc"], abs=tol)
    for sa, sb in zip(a["students"], b["students"]):
        assert sa["rows"] == sb["rows"]
        for k in ("auc_raw", "auc_distill"):
            assert sa[k] == pytest.approx(sb[k], abs=tol), (sa["name"], k)


# One Ray run with small signal blocks and frequent checkpoints, shared by the module: it is
# checked against the local engine, it is the uninterrupted reference of the crash test,
# and the gap test deletes some of its blocks (so it runs last). Student 0 trains two
# epochs, so its group checkpoints once (after epoch 1) and a crash can resume there; with
# patience it keeps its best weights in that checkpoint. The teacher trains on after its
# recording pass, so η's teacher and the final one differ.
GAP_EXTRA = ("run.seed=5", "platform.signal_block_rows=1024", "platform.checkpoint_every_blocks=2",
             "students.0.epochs=2", "students.0.patience=1", "teacher.epochs=2",
             # the second student takes the latest 30% of the train split: both engines pick the same rows
             "students.1.rows=recent", "students.1.sampling_ratio=0.3",
             # and its distilled model also learns from the teacher's soft labels on half the
             # window's earlier rows, which it has no labels for (issue 18)
             "students.1.unlabelled.share=0.5", "students.1.unlabelled.alpha=8")


def _curve(r: dict, *path: str) -> list[float]:
    m = r["teacher"] if path[0] == "teacher" else next(s for s in r["students"] if s["name"] == path[0])
    return [c["auc"] for c in m["valid_curve" + path[1]]]


@pytest.fixture(scope="module")
def reference(shared: Path, ray_local) -> dict:
    return run_experiment(_cfg(shared, "ray1", *GAP_EXTRA, "run.serving=exported-program", "tracking.wandb=offline"),
                          log=lambda _: None)


def test_ray_engine_matches_local_then_reuses_the_teacher(shared: Path, reference: dict, read_wandb_run) -> None:
    local = run_experiment(_cfg(shared, "local", *GAP_EXTRA, "run.engine=local"), log=lambda _: None)
    first = reference
    assert first["engine"] == "ray" and not first["platform"]["teacher_reused"]
    assert first["platform"]["teacher_steps"] > 0
    # the student group's time by part; its members validated every epoch, so that took time
    timing = first["platform"]["student_worker_s"]
    assert set(timing) == {"data_s", "feed_s", "checkpoint_s", "valid_s", "eval_s"} and timing["valid_s"] > 0
    _close(local, first)
    # GAUC and the test rows' bootstrap, merged across the Ray workers, as on the local engine
    assert first["teacher"]["gauc"] == pytest.approx(local["teacher"]["gauc"], abs=1e-3)
    assert first["teacher"]["auc_boot"] == pytest.approx(local["teacher"]["auc_boot"], abs=2e-3)
    for sa, sb in zip(first["students"], local["students"]):
        for kind in ("raw", "distill"):
            assert sa[f"gauc_{kind}"] == pytest.approx(sb[f"gauc_{kind}"], abs=1e-3), (sa["name"], kind)
            assert sa[f"auc_boot_{kind}"] == pytest.approx(sb[f"auc_boot_{kind}"], abs=2e-3), (sa["name"], kind)
    assert first["summary"]["noise"] == "test rows" and len(first["summary"]["differences"]) == 4
    _check_tracking(shared / "ray1", first, read_wandb_run)
    # the rows it trained on (every pass), not the test split it was scored on
    assert first["teacher"]["rows"] >= local["teacher"]["rows"] > first["teacher"]["test_rows"] > 0
    assert first["oracle"]["auc"] == pytest.approx(local["oracle"]["auc"], abs=1e-3)
    # validation, early stopping and both teachers as on the local engine
    for k in ("signal_auc_history", "signal_auc_window", "signal_auc"):
        assert first["teacher"][k] == pytest.approx(local["teacher"][k], abs=1e-3), k
    assert first["teacher"]["signal_rows"] == local["teacher"]["signal_rows"]
    assert first["teacher"]["final"]["auc"] == pytest.approx(local["teacher"]["final"]["auc"], abs=1e-3)
    assert first["teacher"]["stopped_epoch"] == local["teacher"]["stopped_epoch"] == 2
    assert _curve(first, "teacher", "") == pytest.approx(_curve(local, "teacher", ""), abs=1e-3)
    for sa, sb in zip(first["students"], local["students"]):
        for kind in ("_raw", "_distill"):
            assert sa["stopped_epoch" + kind] == sb["stopped_epoch" + kind], (sa["name"], kind)
            assert _curve(first, sa["name"], kind) == pytest.approx(_curve(local, sa["name"], kind), abs=1e-3)
    assert [len(_curve(first, "student", k)) for k in ("_raw", "_distill")] == [2, 2]
    assert all(s["signal_coverage"] == 1.0 for s in first["students"])
    recent = first["students"][1]
    assert recent["rows_from"] == "recent" and abs(recent["rows"] - 0.3 * 16_000) <= 2  # of the 16k-row train split
    # half the window's other 0.2 × 16k rows, the same on both engines; none of the other student's
    assert recent["unlabelled_rows"] == local["students"][1]["unlabelled_rows"]
    assert abs(recent["unlabelled_rows"] - 0.5 * 0.2 * 16_000) < 150 and recent["unlabelled_without_signal"] == 0
    assert first["students"][0]["unlabelled_rows"] == 0
    assert "unlabelled" in (shared / "ray1" / "report.md").read_text()
    assert abs(first["students"][0]["rows"] - 0.5 * 16_000) < 400  # a uniform half of the split
    p = first["platform"]
    # from the run's start to the teacher's first step (start-up, preparation, Train's start)
    assert 0 < p["first_teacher_step_s"] < first["seconds"]
    assert p["stream_rows"] == p["stream_rows_with_signal"] > 0
    assert p["failures"] == []  # no Train run restarted
    # the teacher's final checkpoint: its model (the transfer stage reads it), no optimizer state
    from recdistill.transfer.augment import teacher_state_path
    from recdistill.train.checkpoint import load_state

    final_state = load_state(teacher_state_path(first["teacher"]["checkpoint"]))
    assert final_state["opts"] == [] and final_state["model"], sorted(final_state)
    # the finished run dropped its student groups' checkpoints (models/ has them); the teacher's stay
    train_dirs = [d.name for d in (shared / "ray1" / "ray_train").iterdir()]
    assert any(n.startswith("teacher-") for n in train_dirs) and not any(n.startswith("students-") for n in train_dirs)

    # (a second run on the same teacher key: test_packed_seeds_... below, as seed 5 of two)
    assert sorted(local["models"]["written"]) == sorted(MODELS)

    # Another history cut (a log with time, not shuffled) is the same teacher, so it is reused
    # (the store path above); that its students' larger window finds a signal on every row
    # is the join's (tests/signals/test_signals.py::test_join_reads_every_window_the_teacher_recorded).
    assert _key(shared, *GAP_EXTRA, "teacher.history_fraction=0.3") == _key(shared, *GAP_EXTRA)

    # A different teacher seed is a different key: the teacher trains again.
    assert _key(shared, *GAP_EXTRA, "run.seed=1") != p["teacher_key"]


def test_packed_seeds_reuse_the_teacher_and_keep_the_numbers_of_their_own_runs(shared: Path, reference: dict) -> None:
    """run.seeds=[5, 6] on Ray, one student changed (its α): seed 5's teacher key is the
    reference run's, so it is reused (no teacher step), seed 6's trains. Then each student
    group (two here, concurrent Train runs) trains both seeds' students in one pass, each
    reading its own seed's teacher logits. Seed 5 gets exactly the reference's numbers and
    weights for what it shares with it: another group, another seed beside it change nothing."""
    lines: list[str] = []
    r = run_experiment(_cfg(shared, "packed", *GAP_EXTRA, "students.1.alpha=2.0", "platform.students_per_group=1",
                            "run.seeds=[5, 6]"), log=lines.append)
    assert any("every seed's students in one pass" in x for x in lines)
    seed_dir = shared / "packed" / "seeds"
    five, six = (json.loads((seed_dir / f"seed-{s}" / "results.json").read_text()) for s in (5, 6))
    p5, p6, ref = five["platform"], six["platform"], reference["platform"]
    assert p5["teacher_reused"] is True and p5["teacher_steps"] == 0 and p5["teacher_key"] == ref["teacher_key"]
    assert not p6["teacher_reused"] and p6["teacher_steps"] > 0 and p6["teacher_key"] != p5["teacher_key"]
    assert p5["student_groups"] == p6["student_groups"] == 2
    assert p5["packed_seeds"] == p6["packed_seeds"] == [5, 6]
    assert p5["stream_rows_with_signal"] == p6["stream_rows_with_signal"] == p5["stream_rows"] == ref["stream_rows"]
    assert five["teacher"]["auc"] == reference["teacher"]["auc"] != six["teacher"]["auc"]
    # a reused teacher's signal AUCs are for the cut it was recorded at, and say so
    assert five["teacher"]["signal_auc_history_fraction"] == 0.5
    # the same student, the same rows and seeds, in another group beside another seed: the same numbers
    a, b = five["students"][0], reference["students"][0]
    for k in ("auc_raw", "auc_distill", "valid_curve_distill", "rows"):
        assert a[k] == b[k], k
    assert five["students"][1]["auc_raw"] == reference["students"][1]["auc_raw"]  # its raw result, from the store
    for a, b in zip(six["students"], five["students"]):  # another seed: other weights, rows and teacher
        assert a["auc_distill"] != b["auc_distill"], a["name"]
    # a reused teacher and reused raw students still leave as artifacts, their weights from the store
    assert sorted(five["models"]["written"]) == sorted(six["models"]["written"]) == sorted(MODELS)
    for name in ("teacher", "student/raw", "single/raw", "student/distill"):
        sha = [json.loads((d / "models" / name / "manifest.json").read_text())["files"]["weights.safetensors"]
               ["sha256"] for d in (shared / "ray1", seed_dir / "seed-5")]
        assert sha[0] == sha[1], name
    assert r["summary"]["seeds"] == 2 and [x["seed"] for x in r["per_seed"]] == [5, 6]
    # each seed's live rows reached its own run's log, under the names its own run gives them
    rows = [json.loads(x) for x in (seed_dir / "seed-6" / "metrics.jsonl").read_text().splitlines()]
    metrics = [x for x in rows if x.get("kind") == "metrics"]
    assert any("student/student/distill/rows" in x for x in metrics)
    assert not any("seed-" in k for x in metrics for k in x)


def _key(shared: Path, *extra: str) -> str:
    from recdistill.train.keys import teacher_key

    return teacher_key(_cfg(shared, "k", *extra))


def test_killed_teacher_and_student_workers_resume_from_their_checkpoints(shared: Path, reference: dict,
                                                                          tmp_path: Path) -> None:
    """A worker process dies mid-teacher, and the student group's worker dies in its second
    epoch; Train restarts each from its last checkpoint and the run ends with the metrics
    of an uninterrupted run."""
    teacher_marker, students_marker = tmp_path / "teacher_killed", tmp_path / "students_killed"
    # the group's stream batches (of the smallest student batch size) over both epochs: the
    # kill lands halfway through epoch 2, after the group's checkpoint of epoch 1
    # small stream batches here (the reference read 32k-row ones: the same numbers), so that
    # an epoch has several and the kill lands mid-epoch
    per_epoch = math.ceil(reference["platform"]["stream_rows"] / 512)
    os.environ[FAIL_ENV] = f"teacher:7:{teacher_marker};students:{per_epoch + per_epoch // 2}:{students_marker}"
    try:
        crashed = run_experiment(_cfg(shared, "crashed", *GAP_EXTRA, "platform.signal_store=" + str(tmp_path / "s2"),
                                      "platform.stream_batch_rows=512"),
                                 log=lambda _: None)
    finally:
        del os.environ[FAIL_ENV]
    assert teacher_marker.exists() and students_marker.exists(), "a failure hook did not fire"
    assert crashed["teacher"]["resumed"] == 1 and crashed["platform"]["student_resumed"] == 1
    # the driver was told why each resumed: one failure of each run, its worker dead
    failures = crashed["platform"]["failures"]
    assert sorted(f["role"] for f in failures) == ["student", "teacher"], failures
    assert all(len(f["errors"]) == 1 and "died" in f["errors"][0] for f in failures), failures
    assert "## Restarts" in (shared / "crashed" / "report.md").read_text()
    assert "## Restarts" not in (shared / "ray1" / "report.md").read_text()
    assert crashed["teacher"]["steps"] == reference["teacher"]["steps"]
    _close(reference, crashed, tol=2e-3)
    # the signals' AUC accumulated before the crash came back with the checkpoint
    assert crashed["teacher"]["signal_rows"] == reference["teacher"]["signal_rows"]
    for k in ("signal_auc_history", "signal_auc_window"):
        assert crashed["teacher"][k] == pytest.approx(reference["teacher"][k], abs=1e-4), k
    assert _curve(crashed, "student", "_raw") == pytest.approx(_curve(reference, "student", "_raw"), abs=1e-6)
    # raw students do not see the teacher: resumed, they end exactly where the reference did
    for sa, sb in zip(reference["students"], crashed["students"]):
        assert sa["auc_raw"] == pytest.approx(sb["auc_raw"], abs=1e-6), sa["name"]


def test_students_that_follow_the_teacher_end_where_students_started_after_it_do(shared: Path, reference: dict,
                                                                                   tmp_path: Path) -> None:
    """platform.students_follow: the group starts beside the teacher (half a CPU each, so both
    fit with one left for Ray Data) and joins the window's logits block by block as the
    teacher publishes them (1,024-row blocks here). Its joined batches are the sequential
    run's, so every model ends where the reference's did. Torch threads are pinned to the
    reference's count (the node's CPUs): following on one node, the group would take half."""
    logs: list[str] = []
    followed = run_experiment(_cfg(shared, "followed", *GAP_EXTRA, "platform.signal_store=" + str(tmp_path / "s3"),
                                   "platform.students_follow=yes", "platform.cpus_per_worker=0.5",
                                   f"platform.torch_threads={len(os.sched_getaffinity(0))}"), log=logs.append)
    p, ref = followed["platform"], reference["platform"]
    assert p["students_followed_teacher"] and not p["teacher_reused"] and p["stream_rows_late"] == 0
    assert (p["stream_rows"], p["stream_rows_with_signal"]) == (ref["stream_rows"], ref["stream_rows_with_signal"])
    assert any("following the teacher" in line for line in logs)
    assert "stream_s" not in p and p["students_after_teacher_s"] >= 0
    assert followed["teacher"]["auc"] == pytest.approx(reference["teacher"]["auc"], abs=1e-6)
    for sa, sb in zip(followed["students"], reference["students"]):
        for k in ("auc_raw", "auc_distill", "logloss_raw", "logloss_distill"):
            assert sa[k] == pytest.approx(sb[k], abs=1e-6), (sa["name"], k)
    for name in ("student", "single"):
        for kind in ("_raw", "_distill"):
            assert _curve(followed, name, kind) == pytest.approx(_curve(reference, name, kind), abs=1e-6)


MODELS = ["teacher", "student/raw", "student/distill", "single/raw", "single/distill"]


def test_models_leave_the_run_and_score_its_test_split_as_results_json(shared: Path, reference: dict,
                                                                        tmp_path: Path) -> None:
    """Every model of the run is an artifact; `score --split test` on the run's own log gives
    results.json's test figures back; bad logs get clear errors; the export matches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recdistill.artifacts.export_dir import export_artifact
    from recdistill.artifacts.score import ScoreError, encoded_batches, score
    from recdistill.data.schema import LogSchema
    from recdistill.serving.export import available_formats

    run = shared / "ray1"
    assert sorted(reference["models"]["written"]) == sorted(MODELS) and "missing" not in reference["models"]
    for s in reference["students"]:  # measured: the exported serving tower timed on CPU
        serving = s["serving"]
        cpu = serving["measured"][0]
        assert serving["format"] == "exported-program" and cpu["device"] == "cpu" and cpu["threads"] == 1
        for b in ("1", "512"):
            assert 0 < cpu["batch"][b]["p50_ms"] <= cpu["batch"][b]["p99_ms"] and cpu["batch"][b]["rows_per_s"] > 0
        assert serving["artifact_bytes"] > 0 and serving["exported_bytes"] > 0
        assert serving["params"]["dense"] + serving["params"]["embedding"] == serving["params"]["total"] <= s["params"]
    assert "Serving cost (measured)" in (run / "report.md").read_text()
    for name in MODELS:
        assert (run / "models" / name / "manifest.json").is_file(), name
    data = str(shared / "data")
    s0 = reference["students"][0]
    got = score(run / "models" / "student" / "distill", data, "parquet", split="test", out=str(tmp_path / "preds"),
                log=lambda _: None)
    assert got.metrics["auc"] == pytest.approx(s0["auc_distill"], abs=1e-6)
    assert got.metrics["logloss"] == pytest.approx(s0["logloss_distill"], abs=1e-6)
    assert got.metrics["calibration"] == pytest.approx(s0["calibration_distill"], abs=1e-6)
    assert got.rows == reference["teacher"]["test_rows"]
    assert got.unseen == reference["data"]["oov_test"]  # ids training never saw, per field
    preds = pq.read_table(tmp_path / "preds")
    assert preds.column_names == ["row_id", "logit", "p"] and preds.num_rows == got.rows
    teacher = score(run / "models" / "teacher", data, "parquet", split="test", log=lambda _: None)
    assert teacher.metrics["auc"] == pytest.approx(reference["teacher"]["final"]["auc"], abs=1e-6)  # as trained last

    # a log of another format, and one whose fields are not the model's
    with pytest.raises(ScoreError, match="trained on a 'parquet' log; --format 'criteo'"):
        score(run / "models" / "teacher", data, "criteo", log=lambda _: None)
    odd = LogSchema(dense=("I1", "I99"), categorical=("C1",), categorical_type="int64", source="synthetic")
    table = pa.table({"row_id": pa.array([1, 2], pa.int64()), "label": pa.array([0, 1], pa.int8()),
                      "I1": pa.array([1.0, 2.0], pa.float32()), "I99": pa.array([0.5, 0.1], pa.float32()),
                      "C1": pa.array([3, 4], pa.int64())}, schema=odd.arrow_schema())
    pq.write_table(table, tmp_path / "odd.parquet")
    with pytest.raises(ScoreError, match=r"missing \d+: I2 \(dense\).*extra 1: I99 \(dense\)"):
        score(run / "models" / "teacher", str(tmp_path / "odd.parquet"), "parquet", log=lambda _: None)

    # the exported main tower equals the eager model on the test split, in every format installed
    batches = list(encoded_batches(run / "models" / "student" / "distill", data, "parquet", split="test"))
    assert sum(int(b[0].shape[0]) for b in batches) == got.rows
    for fmt in available_formats():
        info = export_artifact(run / "models" / "student" / "distill", fmt, tmp_path / "export" / fmt, batches,
                               log=lambda _: None)
        assert max(info["max_abs_diff_vs_eager"].values()) <= 1e-5
        assert bool(info["dropped"]) == (s0["towers"] == "decoupled")  # a decoupled student's aux tower is dropped
        assert (tmp_path / "export" / fmt / "preprocess.json").is_file()


def test_missing_signal_blocks_are_masked_and_reported(shared: Path, reference: dict) -> None:
    """Delete half the window's signal blocks: students still train, the gap is counted."""
    from recdistill.signals.store import SignalStore

    store = SignalStore(str(shared / "store"))
    assert store.committed(reference["platform"]["teacher_key"]) == reference["platform"]["signal_id"]
    blocks, _ = store.scan(reference["platform"]["signal_id"])
    window = [b for b in blocks if b.window == 1]
    assert len(window) >= 2
    for b in window[::2]:
        os.remove(b.path)
    gap = run_experiment(_cfg(shared, "gap", *GAP_EXTRA), log=lambda _: None)
    p = gap["platform"]
    assert p["teacher_reused"]
    missing = sum(b.rows for b in window[::2])
    assert p["stream_rows"] - p["stream_rows_with_signal"] == missing
    for s in gap["students"]:
        assert 0 < s["signal_coverage"] < 1
        assert s["auc_raw"] == pytest.approx(next(r for r in reference["students"] if r["name"] == s["name"])["auc_raw"],
                                             abs=1e-6)


def _check_tracking(run_dir: Path, results: dict, read_run) -> None:
    """The run's offline W&B run, read back from its own log: per-step teacher rows and
    per-epoch student rows that came live from the Train workers, the resolved config, the
    results as a summary, the outputs as an artifact; and wandb would sync it."""
    import subprocess
    import sys

    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    assert results["tracking"]["wandb_run_id"] in log.name
    run = read_run(log)
    teacher = [h for h in run["history"] if "teacher/step" in h]
    assert [h["teacher/valid_auc"] for h in teacher if "teacher/valid_auc" in h] == pytest.approx(
        [c["auc"] for c in results["teacher"]["valid_curve"]])
    assert any("teacher/samples_per_s" in h for h in teacher)
    epochs = [h for h in run["history"] if "student/epoch" in h]
    assert [h["student/epoch"] for h in epochs] == [1, 2]  # student 0 trains two epochs
    assert epochs[0]["student/student/distill/valid_auc"] == pytest.approx(
        results["students"][0]["valid_curve_distill"][0]["auc"])
    assert run["summary"]["teacher/auc"] == pytest.approx(results["teacher"]["auc"])
    assert run["summary"]["student/student/auc_distill"] == pytest.approx(results["students"][0]["auc_distill"])
    assert run["config"]["students"][0]["epochs"] == 2 and run["config"]["teacher"]["batch_size"] == 1024
    models = {f"ray1-{name.replace('/', '-')}": name for name in results["models"]["written"]}
    assert sorted(run["artifacts"]) == sorted(["ray1-outputs", *models])
    for art, name in models.items():  # each model as a W&B artifact of type model, its manifest as metadata
        assert run["artifact_types"][art] == "model"
        assert run["artifact_metadata"][art]["name"] == name and "weights.safetensors" in run["artifact_metadata"][art]["files"]
    sync = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(log.parent)],
                          capture_output=True, text=True, timeout=120)
    assert "Would sync 1 run" in sync.stdout + sync.stderr, sync.stdout + sync.stderr
    jsonl = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(x["kind"] == "config" for x in jsonl) == 2  # as given, then resolved
