"""The online pipeline on a real local Ray: per-window results, teacher reuse, a window
whose signals never come, a killed streaming teacher and a killed student worker that
resume at a window, and the signal hub killed while the students wait on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recdistill.config import load_config
from recdistill.smoke import smoke_test
from recdistill.online.pipeline import run_online
from recdistill.train.worker import DROP_ENV, FAIL_ENV, KILL_HUB_ENV

pytestmark = pytest.mark.timeout(300)

CONFIG = Path(__file__).parents[2] / "jobs" / "configs" / "online_demo.yaml"


def _cfg(tmp: Path, store: str, name: str, *extra: str):
    return smoke_test(load_config(CONFIG, [f"data.path={tmp / 'data'}", f"platform.signal_store={tmp / store}",
                                           f"run.dir={tmp / name}", f"stream.signal_timeout_s={TIMEOUT_S}",
                                           # no run here checks W&B (tests/test_distributed.py does):
                                           # ~2 CPU-s a run on a CPU-bound suite
                                           "tracking.wandb=disabled",
                                           # the distilled student also learns from soft labels on half the
                                           # rows outside its sample (issue 18), through the crash and resume
                                           "students.0.unlabelled.share=0.5",
                                           # and it reads the teacher's representations, refreshed per window
                                           # (LoopFM online): through the crashes too, as of strictly before
                                           # each row, so the results stay exact whatever the timing
                                           "teacher.representations=true",
                                           "students.0.representations.use=[user,item,history]", *extra]))


# How long students wait for a window's signals (config, not a sleep). In the faults run
# the killed teacher must restart and publish window 4 while the students wait out window 3
# (the retried wait on the restarted hub starts over) and then wait for window 4.
TIMEOUT_S = 15


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("online")


@pytest.fixture(scope="module")
def first(tmp: Path, ray_local) -> dict:
    return run_online(_cfg(tmp, "store", "first", "stream.keep_models=every"), log=lambda _: None)


def test_results_per_window_and_shift(first: dict, tmp: Path) -> None:
    cfg = _cfg(tmp, "store", "first")
    streaming = list(range(cfg.stream.batch_windows, cfg.stream.windows))
    assert [w["window"] for w in first["windows"]] == streaming == [s["window"] for s in first["shift"]]
    for w in first["windows"]:
        assert w["signals"] and w["lag"] is not None and w["lag"] >= 0
        assert 0.0 < w["teacher"]["auc"] < 1.0
        for s in w["students"]:
            assert {"name", "auc", "auc_raw", "auc_label_only", "eta"} <= s.keys()
    assert all({"js", "fired", "js_label", "js_prediction", "js_fields"} <= s.keys() for s in first["shift"])
    assert first["teacher"]["steps"] > 0 and not first["teacher"]["reused"]
    # the teacher's representations: none before its batch pass ended, then most users have one
    assert all(0.5 < w["representations_found"] <= 1 for w in first["windows"])
    s0 = first["students"][0]
    # 60% of each window labelled, half the other 40% unlabelled: about 3:1
    assert 2.5 < s0["rows_labelled"] / s0["rows_unlabelled"] < 3.5
    for w in first["windows"]:  # replayed rows carry logits recorded in an earlier window
        assert (w["replay_signal_age"] is None) == (not w["replay"]) and (w["replay_signal_age"] or 1) >= 1
    saved = json.loads((tmp / "first" / "results.json").read_text())
    assert saved["windows"] == json.loads(json.dumps(first["windows"]))
    assert (tmp / "first" / "auc_over_windows.png").stat().st_size > 10_000
    assert "AUC per window" in (tmp / "first" / "report.md").read_text()
    # the models as the stream left them: the teacher and every student kind, with the spool's encoder
    names = {"teacher", *(f"{s.name}/{k}" for s in cfg.students for k in ("raw", "distill", "label_only"))}
    written = first["models"]["written"]
    assert {n for n in written if not n.startswith("windows/")} == names
    from recdistill.artifacts.model_dir import load_artifact, read_manifest

    art = load_artifact(tmp / "first" / written[f"{cfg.students[0].name}/distill"])
    assert art.provenance["metrics"]["window"] == streaming[-1]
    assert art.model.num_params() == first["students"][0]["params"]
    # stream.keep_models=every: each model also as it was after each streamed window, scored
    # by the next window's prequential AUC; the last one is the run's final model
    assert {n for n in written if n.startswith("windows/")} == {f"windows/w{w:04d}/{n}" for w in streaming for n in names}
    for w, nxt in zip(streaming, first["windows"][1:]):
        a = load_artifact(tmp / "first" / written[f"windows/w{w:04d}/{cfg.students[0].name}/distill"])
        assert a.provenance["metrics"] == {"window": w, "auc": pytest.approx(nxt["students"][0]["auc"])}

    def sha(name: str) -> str:
        return read_manifest(tmp / "first" / written[name])["files"]["weights.safetensors"]["sha256"]

    for n in names:
        assert sha(f"windows/w{streaming[-1]:04d}/{n}") == sha(n), n
    assert sha(f"windows/w{streaming[0]:04d}/teacher") != sha("teacher")
    assert not list((tmp / "store" / "_window_models").iterdir())  # handed over, then removed


def test_second_run_reuses_the_online_teacher(first: dict, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the student worker dies after scoring and learning window 3, before its checkpoint: it
    # resumes from the one after window 2 (learners, label-only copies, replay buffer)
    monkeypatch.setenv(FAIL_ENV, f"online-students:3:{tmp / 'students_killed'}")
    again = run_online(_cfg(tmp, "store", "again"), log=lambda _: None)
    assert (tmp / "students_killed").exists() and again["stream"]["student_resumed"] == 1
    (failure,) = again["stream"]["failures"]  # the driver was told why the students resumed
    assert failure["run"].startswith("online-students-") and "died" in failure["errors"][0], failure
    assert "## Restarts" in (tmp / "again" / "report.md").read_text()
    assert again["teacher"]["reused"] and again["teacher"]["key"] == first["teacher"]["key"]
    # the reused teacher's artifact: its weights kept in the store beside its signals
    sha = [json.loads((tmp / r / "models" / "teacher" / "manifest.json").read_text())["files"]["weights.safetensors"]
           ["sha256"] for r in ("first", "again")]
    assert sha[0] == sha[1]
    assert [w["teacher"] for w in again["windows"]] == [w["teacher"] for w in first["windows"]]
    # the same signals and seeds: the students learn exactly the same, crash or not
    assert [w["window"] for w in again["windows"]] == [w["window"] for w in first["windows"]]
    for a, b in zip(again["windows"], first["windows"]):
        for kind in ("auc", "auc_raw", "auc_label_only"):
            assert [s[kind] for s in a["students"]] == pytest.approx([s[kind] for s in b["students"]], abs=1e-6)
    assert again["students"][0]["rows_unlabelled"] == first["students"][0]["rows_unlabelled"]  # kept over the resume
    # a different τ is a different teacher
    other = _cfg(tmp, "store", "x", "stream.teacher_update_interval=1")
    from recdistill.train.keys import online_teacher_key
    assert online_teacher_key(other) != first["teacher"]["key"]


def test_missing_signals_a_killed_teacher_and_a_killed_hub(first: dict, tmp: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # window 3's signals never complete (the student waits signal_timeout_s for them); the
    # signal hub is killed while that wait is in flight (Ray restarts it, the wait is
    # retried on the new one, which rebuilds its index from the store); the teacher worker
    # dies right after window 3, before its checkpoint, and resumes from the one after
    # window 2 while the student waits for window 4, through the restarted hub
    monkeypatch.setenv(DROP_ENV, "3")
    monkeypatch.setenv(FAIL_ENV, f"online-teacher:3:{tmp / 'killed'}")
    monkeypatch.setenv(KILL_HUB_ENV, f"3:{tmp / 'hub_killed'}")
    res = run_online(_cfg(tmp, "store2", "faults"), log=lambda _: None)
    assert (tmp / "killed").exists() and res["stream"]["teacher_resumed"] >= 1
    assert (tmp / "hub_killed").exists(), "the hub-kill hook did not fire"
    # the hub's death did not crash the students (a failure says why a run restarted)
    assert res["stream"]["student_resumed"] == 0, res["stream"]["failures"]
    assert {f["run"].split("-")[1] for f in res["stream"]["failures"]} == {"teacher"}, res["stream"]["failures"]
    by_w = {w["window"]: w for w in res["windows"]}
    assert not by_w[3]["signals"] and by_w[3]["lag"] is None and by_w[3]["signal_rows"] == 0
    assert by_w[2]["signals"] and by_w[4]["signals"]  # distillation resumes after the gap
    # the resumed teacher redid window 3 from its checkpoint: the same teacher as without faults
    for a, b in zip(res["windows"], first["windows"]):
        assert a["teacher"]["auc"] == pytest.approx(b["teacher"]["auc"], abs=1e-6)
    assert res["windows"][0]["students"][0]["auc"] == pytest.approx(first["windows"][0]["students"][0]["auc"],
                                                                    abs=1e-6)
