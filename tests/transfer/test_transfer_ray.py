"""The transfer stage on a real local Ray, on the shipped demo config shrunk to a smoke
test: every variant's learning curve, the projection report, sampling and augmentation
in the offline stream, the report files, and a worker killed mid-variant that resumes from
its checkpoint. (Its teacher stage is the 1→N experiment's, whose reuse from the signal
store tests/test_distributed.py covers.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recdistill.config import load_config
from recdistill.smoke import smoke_test
from recdistill.train.worker import FAIL_ENV
from recdistill.transfer.pipeline import run_transfer, speedups, time_to_match

pytestmark = pytest.mark.timeout(400)

CONFIG = Path(__file__).parents[2] / "jobs" / "configs" / "transfer_demo.yaml"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("transfer")


def _config(tmp: Path, name: str, *extra: str):
    import dataclasses

    cfg = smoke_test(load_config(CONFIG, [f"data.path={tmp / 'data'}", f"platform.signal_store={tmp / 'store'}",
                                          f"run.dir={tmp / name}", "transfer.eval_every=5",
                                          # no run here checks W&B (tests/test_distributed.py does)
                                          "tracking.wandb=disabled",
                                          # pinned (not sized by the data): the kill step below counts on it
                                          "students.0.batch_size=2048", *extra]))
    return dataclasses.replace(cfg, students=[dataclasses.replace(cfg.students[0], embed_dim=16)])


# The worker dies in end_to_end's second epoch (5 steps an epoch here): scratch and
# progressive are done, end_to_end has its epoch-1 checkpoint.
KILL_STEP = 7


@pytest.fixture(scope="module")
def first(tmp: Path, ray_local) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FAIL_ENV, f"transfer-end_to_end:{KILL_STEP}:{tmp / 'transfer_killed'}")
        return run_transfer(_config(tmp, "first", "transfer.sampling.strategy=biased", "transfer.sampling.budget=0.8"),
                            log=lambda _: None)


def test_a_killed_worker_resumes_the_variant_at_its_last_epoch(first: dict, tmp: Path) -> None:
    assert (tmp / "transfer_killed").exists(), "the failure hook did not fire (fewer steps per variant?)"
    v = first["variants"]
    # the variants finished before the crash come from the checkpoint, not trained again
    assert [n for n in v if v[n].get("restored")] == ["scratch", "progressive"]
    assert [n for n in v if v[n]["resumed"]] == ["end_to_end"] and v["end_to_end"]["resumed"] == 1
    (failure,) = first["platform"]["failures"]  # the driver was told why it resumed
    assert failure["role"] == "transfer" and "died" in failure["errors"][0], failure
    assert "## Restarts" in (tmp / "first" / "report.md").read_text()
    e2e, scratch = v["end_to_end"], v["scratch"]
    check = e2e["resume_check"]
    assert 0 < check["step"] < KILL_STEP  # an epoch boundary before the kill
    # the restored weights score exactly what they scored when checkpointed
    assert check["auc_restored"] == pytest.approx(check["auc_saved"], abs=1e-12)
    # nothing lost or counted twice: the same steps, rows and curve points as the scratch
    # student, which trains on the same rows for the same epochs in one phase
    assert (e2e["steps"], e2e["rows"], e2e["augmented_rows"]) == (scratch["steps"], scratch["rows"],
                                                                  scratch["augmented_rows"])
    assert [(p["step"], p["rows"]) for p in e2e["curve"]] == [(p["step"], p["rows"]) for p in scratch["curve"]]
    # every variant leaves as an artifact, those finished before the crash included: its
    # weights score the test split as the variant's final metrics say
    from recdistill.artifacts.score import score

    student = first["student"]["name"]
    assert set(first["models"]["written"]) == {"teacher", *(f"{student}/{n}" for n in v)}
    got = score(tmp / "first" / first["models"]["written"][f"{student}/scratch"], str(tmp / "data"), "parquet",
                split="test", log=lambda _: None)
    assert got.metrics["auc"] == pytest.approx(scratch["final"]["auc"], abs=1e-6)


def test_every_variant_has_a_curve_and_final_metrics(first: dict, tmp: Path) -> None:
    assert list(first["variants"]) == ["scratch", "progressive", "end_to_end", "progressive_noaug"]
    for name, v in first["variants"].items():
        steps = [p["step"] for p in v["curve"]]
        assert steps[0] == 0 and steps == sorted(steps) and steps[-1] == v["steps"] > 0
        assert 0.5 < v["final"]["auc"] < 1.0 and v["seconds"] > 0
        assert [p["seconds"] for p in v["curve"]] == sorted(p["seconds"] for p in v["curve"])
    prog, e2e = first["variants"]["progressive"], first["variants"]["end_to_end"]
    assert {p["phase"] for p in prog["curve"][1:]} == {1, 2} and {p["phase"] for p in e2e["curve"][1:]} == {1}
    assert prog["steps"] == e2e["steps"] == first["variants"]["scratch"]["steps"]  # same data, same epochs
    # the augmented rows are in the stream; the no-augmentation variant saw none
    assert first["data"]["augmented_rows"] > 0 and prog["augmented_rows"] > 0
    assert first["variants"]["progressive_noaug"]["augmented_rows"] == 0
    assert prog["rows"] == first["variants"]["progressive_noaug"]["rows"]  # the same labelled budget


def test_projection_report_grows_tables_without_distortion(first: dict) -> None:
    scratch, prog = first["variants"]["scratch"], first["variants"]["progressive"]
    assert scratch["fields"] == []
    assert first["teacher_embed_dim"] == 8 and first["student"]["embed_dim"] == 16
    assert prog["fields"] and all(f["method"] == "qr" and f["d_t"] == 8 and f["d_s"] == 16 for f in prog["fields"])
    assert max(f["gram_distortion"] for f in prog["fields"]) < 1e-5
    assert all(f["unmapped"] == 0 for f in prog["fields"])  # one encoder: every id maps


def test_biased_sampling_rebalances_and_is_recorded(first: dict) -> None:
    d = first["data"]
    assert d["sampling"]["strategy"] == "biased"
    assert d["train_positive_rate"] == pytest.approx(0.5, abs=0.05)
    assert d["train_rows"] == pytest.approx(0.8 * d["offline_rows"], rel=0.1)
    # the effective negative keep rate relative to positives feeds the debias correction
    assert 0 < d["negative_keep_effective"] < 0.5


def test_reports_are_written(first: dict, tmp: Path) -> None:
    out = tmp / "first"
    saved = json.loads((out / "results.json").read_text())
    assert saved["kind"] == "transfer" and saved["speedup"]["target_auc"] == first["speedup"]["target_auc"]
    assert (out / "curves.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "Embedding projection per field" in md and "progressive" in md and "curves.png" in md
    assert (out / "report.html").exists()


def test_time_to_match_and_speedups() -> None:
    curve = [{"step": 0, "seconds": 0.0, "auc": 0.5}, {"step": 10, "seconds": 2.0, "auc": 0.7},
             {"step": 20, "seconds": 4.0, "auc": 0.72}]
    assert time_to_match(curve, 0.7) == {"step": 10, "seconds": 2.0, "auc": 0.7}
    assert time_to_match(curve, 0.8) is None
    base = {"curve": curve, "steps": 20, "seconds": 4.0}
    fast = {"curve": [{"step": 0, "seconds": 0.0, "auc": 0.71}, {"step": 20, "seconds": 3.0, "auc": 0.74}]}
    slow = {"curve": [{"step": 0, "seconds": 0.0, "auc": 0.6}, {"step": 20, "seconds": 3.0, "auc": 0.65}]}
    sp = speedups({"scratch": base, "progressive": fast, "end_to_end": slow})
    assert sp["target_auc"] == 0.72
    assert sp["progressive"] == {"reached": True, "steps": 20, "seconds": 3.0, "step_ratio": 1.0, "time_ratio": 0.75}
    assert not sp["end_to_end"]["reached"] and sp["end_to_end"]["step_ratio"] is None


def test_the_same_config_twice_gives_identical_curves(first: dict, tmp: Path) -> None:
    """The transfer A/B (issue 16): the same config and seed again — the teacher now read
    from the store, no worker killed, and only two of the variants (each variant trains
    from its own seeds, whatever ran before it) — learns exactly the same curves, point
    for point. The first run's end_to_end variant resumed from a checkpoint, so this also
    pins an exact resume."""
    second = run_transfer(_config(tmp, "second", "transfer.sampling.strategy=biased", "transfer.sampling.budget=0.8",
                                  "transfer.variants=[end_to_end, scratch]"), log=lambda _: None)
    assert second["platform"]["teacher_reused"] and not first["platform"]["teacher_reused"]
    assert second["data"] == first["data"]
    assert list(second["variants"]) == ["end_to_end", "scratch"]
    for name, w in second["variants"].items():
        v = first["variants"][name]
        assert [(p["step"], p["rows"], p["auc"]) for p in w["curve"]] == [
            (p["step"], p["rows"], p["auc"]) for p in v["curve"]], name
        assert w["final"] == v["final"], name


def test_a_saved_model_with_another_hash_size_is_the_old_model(first: dict, tmp: Path) -> None:
    """transfer.old_model: the first run's teacher artifact is the OLD model of a run whose
    encoder hashes every large field into 4096 buckets (the artifact identity-encodes them,
    up to 20k ids): its logits come from its own encoding, its embeddings through the id
    pairing of the two encoders; no teacher is trained."""
    old_dir = tmp / "first" / first["models"]["written"]["teacher"]
    r = run_transfer(_config(tmp, "from_artifact", f"transfer.old_model={old_dir}", "transfer.augment.ratio=0",
                             "transfer.variants=[scratch, progressive]", "data.buckets=max", "data.hash_buckets=4096"),
                     log=lambda _: None)
    assert r["platform"]["teacher_steps"] == 0 and r["platform"]["teacher_key"] is None
    old = r["old_model"]
    assert old["weights_sha256"] == json.loads((old_dir / "manifest.json").read_text())["files"][
        "weights.safetensors"]["sha256"]
    # its own encoding of the same test rows: the first run's teacher AUC, as trained last
    assert old["test_auc"] == pytest.approx((first["teacher"].get("final") or first["teacher"])["auc"], abs=1e-4)
    pairing = old["id_pairing"]
    hashed = [f for f, p in pairing.items() if p["old_buckets"] > 4096]
    assert hashed and all(pairing[f]["new_buckets"] == 4096 for f in hashed)
    # every field's train ids pair up; identity codes cover every id, so none is unseen by the old model
    assert all(p["pairs"] > 0 and p["old_oov_rows"] == 0 for p in pairing.values())
    prog = r["variants"]["progressive"]
    # a hashed field's 4096 new rows are blends of the old rows whose ids share them
    assert prog["fields"] and all(f["mapped"] + f["unmapped"] == 4096 for f in prog["fields"] if f["rows"] > 4096)
    assert sum(f["mapped"] for f in prog["fields"]) > 0
    assert all(0.5 < v["final"]["auc"] < 1.0 for v in r["variants"].values())
    assert r["data"]["augmented_rows"] == 0 and r["platform"]["stream_rows"] > 0
    assert set(r["models"]["written"]) == {f"{r['student']['name']}/{n}" for n in ("scratch", "progressive")}
    md = (tmp / "from_artifact" / "report.md").read_text()
    assert "saved artifact" in md and "| id pairs |" in md
    # augmentation would need the old encoding of rows already in the new one: refused up front
    from recdistill.config import ConfigError

    with pytest.raises(ConfigError, match="transfer.augment.ratio=0"):
        _config(tmp, "refused", f"transfer.old_model={old_dir}", "transfer.variants=[scratch]")
