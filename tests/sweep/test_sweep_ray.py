"""A small sweep on a real local Ray: one teacher for all trials, Tune runs the rest on
its stored signals, raw students reused, reports and offline W&B runs written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pytest
from ray import tune

from recdistill.sweep.runner import run_sweep
from recdistill.sweep.space import SearchSpace

pytestmark = pytest.mark.timeout(420)

TINY = ["data.rows=12000", "data.days=2", "data.synthetic.num_users=1000", "data.synthetic.max_cardinality=5000",
        "teacher.arch=dcnv2", "teacher.depth=1", "teacher.width=16", "teacher.embed_dim=4", "teacher.batch_size=1024",
        "teacher.epochs=1",
        "students.0.embed_dim=4", "students.0.width=16", "students.0.depth=1", "students.0.batch_size=512",
        "students.0.epochs=1", "tracking.wandb=offline",
        # the serving cost is measured in the shape sweep only (it is its cost axis)
        "run.serving=off"]


# Two trials at once: the second waits for the raw student the first trains (a third, queued
# behind them, added 10 s to these two tests run alone, 88 s, and tested only Tune's queue).
SPACE = SearchSpace("alpha2", "Hypothesis: test. Budget: 2 trials.",
                    {"students.0.alpha": tune.grid_search([0.5, 8.0])}, 1)


def _common(tmp: Path) -> list[str]:
    # relative paths on purpose: Tune runs trials in other working directories
    return [*TINY, "platform.signal_store=store", "run.name=t"]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(scope="module")
def first(tmp: Path, ray_local) -> Iterator[dict]:
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        yield run_sweep(None, _common(tmp), SPACE, Path("sweep"), max_concurrent=2, log=lambda _: None)
    finally:
        os.chdir(cwd)


def test_alpha_sweep_trains_one_teacher(first: dict, tmp: Path) -> None:
    s, out = first, tmp / "sweep"
    assert s["teachers_trained"] == 1 and s["teachers_reused"] == 0
    trials = s["trials"]
    assert [t["config"]["students.0.alpha"] for t in trials] == [0.5, 8.0]
    assert len({t["teacher_key"] for t in trials}) == 1
    assert trials[0]["teacher_steps"] > 0 and all(t["teacher_steps"] == 0 for t in trials[1:])
    # the raw student does not depend on α: trained by trial 0, read by the others
    assert not trials[0]["raw_reused"] and all(t["raw_reused"] for t in trials[1:])
    assert len({t["auc_raw"] for t in trials}) == 1
    for t in trials:
        assert {"config", "auc", "auc_raw", "eta", "params", "teacher_key"} <= t.keys()
        assert 0.4 < t["auc"] < 1.0
    saved = json.loads((out / "results.json").read_text())
    assert saved["teachers_trained"] == 1 and len(saved["trials"]) == 2
    assert (out / "eta_vs_alpha.png").stat().st_size > 5000
    html = (out / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64" in html
    # each trial's run tracked itself live (one offline W&B run each, in the sweep's group),
    # plus the summary run with the trials table
    runs = sorted(out.glob("trials/*/wandb/offline-run-*"))
    assert len(runs) == 2 and all(any(r.glob("*.wandb")) for r in runs)
    assert len({t["wandb_run_id"] for t in saved["trials"]}) == 2 and None not in {t["wandb_run_id"] for t in saved["trials"]}
    assert list(out.glob("tracking/summary/wandb/offline-run-*"))
    lines = [json.loads(x) for x in (out / "trials" / "001" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "config" and any(x["kind"] == "summary" for x in lines)
    # per-epoch rows of its students, live from the Train workers
    assert any(x["kind"] == "metrics" and "student/epoch" in x for x in lines)
    assert lines[0]["config"]["tracking"]["group"] == saved["tracking_group"]


def test_rerun_packed_reuses_everything_and_trains_the_same_students(first: dict, tmp: Path) -> None:
    # the same sweep again, its two trials packed as the students of one run
    packed = run_sweep(None, [*_common(tmp), "tracking.wandb=disabled", f"data.path={tmp / 'sweep' / 'data'}",
                                     f"platform.signal_store={tmp / 'store'}"], SPACE, tmp / "packed", pack=2,
                       log=lambda _: None)
    assert packed["runs"] == 1 and packed["teachers_trained"] == 0 and packed["teachers_reused"] == 1
    assert packed["teacher_steps"] == 0 and all(t["raw_reused"] for t in packed["trials"])
    for a, b in zip(first["trials"], packed["trials"]):
        assert a["auc"] == pytest.approx(b["auc"], abs=1e-6) and a["auc_raw"] == b["auc_raw"]


def test_shape_sweep_answers_the_smallest_student_within_0001_on_measured_latency(first: dict, tmp: Path) -> None:
    """The fixed-budget shape space at smoke scale, its four trials packed as the students of
    one run on the module's teacher: each distilled student's export is timed, the front is
    drawn on that latency, and --keep best:2 keeps the models of the two best trials only."""
    from recdistill.report.sweep import smallest_within
    from recdistill.sweep.space import load_space

    space = load_space(str(Path(__file__).parents[2] / "search_spaces" / "student_shape.py") + ":FIXED_BUDGET")
    common = [*TINY, f"data.path={tmp / 'sweep' / 'data'}", f"platform.signal_store={tmp / 'store'}", "run.name=shape",
              "tracking.wandb=disabled", "run.serving=exported-program"]
    out = tmp / "shape"
    s = run_sweep(None, common, space, out, pack=4, keep="best:2", log=lambda _: None)
    assert s["runs"] == 1 and s["teachers_trained"] == 0 and len(s["trials"]) == 4
    assert all(t["latency_ms_b512"] > 0 and t["latency_ms_b1"] > 0 for t in s["trials"])
    kept = [t for t in s["trials"] if t.get("models")]
    best = sorted(s["trials"], key=lambda t: -t["auc"])[:2]
    assert s["models_kept"] == 2 and {t["trial"] for t in kept} == {t["trial"] for t in best}
    assert all((Path(t["models"]) / "distill" / "manifest.json").is_file() for t in kept)
    gone = [t for t in s["trials"] if not t.get("models")]
    assert not any((Path(t["dir"]) / "models" / f"t{t['trial']:03d}").exists() for t in gone)
    pick = smallest_within(s["trials"])
    md = (out / "report.md").read_text()
    assert "Smallest student within 0.001 AUC of the best" in md and f"trial {pick['trial']}" in md
    assert "measured latency" in md and (out / "eta_vs_params.png").exists()


# A scenario set up to expose early stopping (the closing note of issue 16 shows the same
# space under FIFO, where nothing stops): one trial's learning rate is too small to learn
# anything in three epochs, so its first validation is far below the other trial's.
LR_SPACE = SearchSpace("lr2", "Early stopping: one learning rate too small to learn.",
                       {"students.0.lr": tune.grid_search([0.003, 1e-7])}, 1)


def test_asha_stops_a_trial_early_and_resume_keeps_what_finished(first: dict, tmp: Path) -> None:
    common = [*TINY, f"data.path={tmp / 'sweep' / 'data'}", f"platform.signal_store={tmp / 'store'}", "run.name=a",
              "students.0.epochs=3", "students.0.patience=0", "students.0.eval_every=0", "tune.scheduler=asha",
              "tune.grace_period=1", "tune.reduction_factor=2", "tracking.wandb=disabled"]
    out = tmp / "asha"
    # the dry run looks the teacher up under the key its runs will use (auto keys resolved
    # from the log's stored statistics, no pass): the module's teacher, stored
    dry = run_sweep(None, common, LR_SPACE, tmp / "asha-dry", dry_run=True, log=lambda _: None)
    assert [t["teacher_stored"] for t in dry["trials"]] == [True, True]
    assert dry["trials"][0]["teacher_key"] == first["trials"][0]["teacher_key"]
    s = run_sweep(None, common, LR_SPACE, out, max_concurrent=1, log=lambda _: None)
    # the module's teacher (the students' epochs do not change it): stored, so no trial runs
    # on the driver; both in one Tune stage, in grid order, and the scheduler sees both
    assert s["teachers_trained"] == 0 and s["teachers_reused"] == 1
    t0, t1 = s["trials"]
    assert not t0.get("stopped_early") and 0 < t0["auc"] < 1  # ran to its end
    assert t1["stopped_early"] and t1["stopped_epoch"] == 1 and t1.get("auc") is None
    assert s["stopped_early"] == {"trials": 1, "epochs_run": 1, "epochs_saved": 2}
    # the stopped run's workers gave their CPUs back: later Train runs would wait for them
    import time

    import ray

    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"], ray.available_resources()
    md = (out / "report.md").read_text()
    assert "Stopped early by asha: 1 trial(s)" in md and "| stopped_epoch | valid_auc |" in md
    assert (out / "valid_auc_by_epoch.png").exists() and (out / "trials" / "001" / "stopped.json").exists()
    # the stopped run reported its epoch live before Tune stopped it
    rows = [json.loads(x) for x in (out / "trials" / "001" / "metrics.jsonl").read_text().splitlines()]
    assert [r["student/epoch"] for r in rows if r.get("kind") == "metrics" and "student/epoch" in r] == [1]

    # interrupted after the fact: trial 0's run lost its results, as if cut off before it ended
    (out / "trials" / "000" / "results.json").unlink()
    lines: list[str] = []
    again = run_sweep(None, common, LR_SPACE, out, max_concurrent=1, resume=True, log=lines.append)
    assert any("1 of 2 run(s) had finished (or were stopped) and are kept" in x for x in lines)
    assert again["trials"][0]["auc"] == pytest.approx(t0["auc"], abs=1e-6)  # re-run, the same numbers
    assert again["trials"][1]["stopped_early"]
    assert json.loads((out / "sweep_state.json").read_text())["group"] == s["tracking_group"] == again["tracking_group"]
    from recdistill.config import ConfigError

    with pytest.raises(ConfigError, match="--resume: the trials of .* were 2 others"):
        run_sweep(None, common, SPACE, out, resume=True, log=lambda _: None)


def test_a_dead_actors_placement_groups_are_released_and_no_others(ray_local) -> None:
    """What a stopped trial can leave (seen in CI): its Train controller, killed just after it
    reserved a new worker group's placement group. Such a group outlives its creator (it
    belongs to the job), so the sweep removes it; the driver's own groups and those of live
    actors stay."""
    import time

    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from recdistill.sweep.orphans import orphaned_placement_groups, release_orphans

    @ray.remote(num_cpus=0)
    class Creator:
        def reserve(self) -> str:
            pg = placement_group([{"CPU": 0.5}])
            ray.get(pg.ready())
            return pg.id.hex()

    own = placement_group([{"CPU": 0.25}])
    ray.get(own.ready())
    alive, doomed = Creator.remote(), Creator.remote()
    kept, lost = ray.get(alive.reserve.remote()), ray.get(doomed.reserve.remote())
    ray.kill(doomed)
    deadline = time.time() + 30
    while lost not in {pg.id.hex() for pg in orphaned_placement_groups()} and time.time() < deadline:
        time.sleep(0.2)
    assert {pg.id.hex() for pg in orphaned_placement_groups()} == {lost}
    free = ray.available_resources().get("CPU", 0)
    assert release_orphans() == 1 and orphaned_placement_groups() == []
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < free + 0.5 and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(free + 0.5)
    states = ray.util.placement_group_table()
    assert states[lost]["state"] == "REMOVED" and states[kept]["state"] == "CREATED"
    assert states[own.id.hex()]["state"] == "CREATED"
    ray.kill(alive)
    remove_placement_group(own)
    release_orphans()


def _space(name: str) -> SearchSpace:
    from recdistill.sweep.space import load_space

    return load_space(str(Path(__file__).parents[2] / "search_spaces" / f"{name}.py"))


def test_sampling_space_runs_its_18_trials_on_two_teachers_in_two_runs(first: dict, tmp: Path) -> None:
    """The sampling space at smoke scale, all 18 trials: packed 9 to a run, one run per
    teacher sampling ratio. The module's teacher (ratio 1.0) is stored, so only the 0.5
    one trains; each student's ratio and negative keep rate reach its rows."""
    space = _space("sampling")
    common = [*TINY, f"data.path={tmp / 'sweep' / 'data'}", f"platform.signal_store={tmp / 'store'}",
              "run.name=sampling", "tracking.wandb=disabled"]
    dry = run_sweep(None, common, space, tmp / "sampling-dry", pack=9, dry_run=True, log=lambda _: None)
    assert len(dry["trials"]) == 18 and "18 trials" in space.doc
    assert len({t["teacher_key"] for t in dry["trials"]}) == 2 and len({t["run"] for t in dry["trials"]}) == 2
    full = [t for t in dry["trials"] if t["config"]["teacher.sampling_ratio"] == 1.0]
    assert all(t["teacher_stored"] for t in full) and full[0]["teacher_key"] == first["trials"][0]["teacher_key"]
    assert not any(t["finished"] for t in dry["trials"]) and not (tmp / "sampling-dry" / "results.json").exists()

    s = run_sweep(None, common, space, tmp / "sampling", pack=9, log=lambda _: None)
    assert s["runs"] == 2 and s["teachers_trained"] == 1 and s["teachers_reused"] == 1 and len(s["trials"]) == 18
    by = {(t["config"]["teacher.sampling_ratio"], t["config"]["students.0.sampling_ratio"],
           t["config"]["students.0.negative_keep_rate"]): t for t in s["trials"]}
    assert all(0.0 < t["auc"] < 1.0 and 0.0 < t["auc_raw"] < 1.0 for t in s["trials"])
    # the same students on either teacher: the same raw models (they never see a teacher)
    for (ratio, share, keep), t in by.items():
        if ratio == 0.5:
            assert t["auc_raw"] == by[(1.0, share, keep)]["auc_raw"]
    assert len({t["dir"] for t in s["trials"]}) == 2
    # what each student trained on: its share of the window, fewer negatives at a lower keep rate
    run = json.loads((Path(s["trials"][0]["dir"]) / "results.json").read_text())
    rows = {st["name"]: st["rows"] for st in run["students"]}
    members = [t for t in s["trials"] if t["dir"] == s["trials"][0]["dir"]]
    size = {(t["config"]["students.0.sampling_ratio"], t["config"]["students.0.negative_keep_rate"]):
            rows[f"t{t['trial']:03d}"] for t in members}
    assert size[(0.1, 1.0)] < size[(0.25, 1.0)] < size[(0.5, 1.0)]
    assert size[(0.5, 0.25)] < size[(0.5, 0.5)] < size[(0.5, 1.0)]
    assert (tmp / "sampling" / "report.md").exists()


def test_tau_space_keys_five_online_teachers_and_runs_its_ends_at_smoke_scale(tmp: Path) -> None:
    """The τ space at smoke scale: τ is part of the online teacher's key, so its five values
    are five teachers (a dry run of the whole space). Its two ends run, each training its
    own streaming teacher (τ = 1 steps it every student batch, a frozen one never), and
    report the students' streaming AUC and η. The three values between run the same
    integer-τ code as τ = 1 (at this scale one streamed window of a few batches): running
    them too cost three online runs, ~60 s of suite time, and tested nothing more."""
    from recdistill.config import load_config
    from recdistill.smoke import smoke_overrides

    space = _space("tau")
    config = Path(__file__).parents[2] / "jobs" / "configs" / "online_demo.yaml"
    # one streaming window after two batch ones: the smallest online run there is
    common = ["stream.windows=3", "stream.batch_windows=2", "data.rows=12000", f"data.path={tmp / 'tau-data'}",
              f"platform.signal_store={tmp / 'tau-store'}", "tracking.wandb=disabled", "run.serving=off"]
    common += smoke_overrides(load_config(config, common)) + ["data.rows=12000"]
    dry = run_sweep(config, common, space, tmp / "tau-dry", dry_run=True, log=lambda _: None)
    assert [t["config"]["stream.teacher_update_interval"] for t in dry["trials"]] == [1, 5, 10, 50, None]
    assert len({t["teacher_key"] for t in dry["trials"]}) == 5 and not any(t["teacher_stored"] for t in dry["trials"])
    ends = SearchSpace(space.name, space.doc, {**space.space, "stream.teacher_update_interval":
                                               tune.grid_search([1, None])}, space.num_samples)
    s = run_sweep(config, common, ends, tmp / "tau", log=lambda _: None)
    assert s["runs"] == 2 and s["teachers_trained"] == 2 and len(s["trials"]) == 2
    assert [t["config"]["stream.teacher_update_interval"] for t in s["trials"]] == [1, None]
    assert [t["teacher_key"] for t in s["trials"]] == [dry["trials"][0]["teacher_key"], dry["trials"][-1]["teacher_key"]]
    for t in s["trials"]:
        assert 0.0 < t["stream_auc"] < 1.0 and t["stream_eta"] == t["stream_eta"]
    runs = [json.loads((Path(t["dir"]) / "results.json").read_text()) for t in s["trials"]]
    assert [r["stream"]["tau"] for r in runs] == [1, None]
    md = (tmp / "tau" / "report.md").read_text()
    # the report ranks on the stream (τ acts there) and asks no size question of one student
    assert "Best streaming AUC" in md and "| stream_auc | stream_eta |" in md and "Smallest student" not in md
    assert (tmp / "tau" / "auc_vs_tau.png").stat().st_size > 5000
