"""One experiment end to end on a tiny synthetic log (Ray Data for the log, one process)."""

from __future__ import annotations

import json
from pathlib import Path

import math
import pytest
import torch

from recdistill.config import load_config
from recdistill.data.tensors import TensorLog
from recdistill.experiment import run_experiment
from recdistill.results import transferability
from recdistill.train.plan import sample_index
from recdistill.models import FeatureSpec, Ranker
from recdistill.train.loop import fit

pytestmark = pytest.mark.timeout(300)


def test_early_stopping_without_a_valid_split_fails_before_training() -> None:
    from recdistill.train.plan import check_validation

    cfg = load_config(None, ["data.splits=[0.9, 0.0, 0.1]", "students.0.patience=2"])
    with pytest.raises(ValueError, match=r"students\.0\.patience=2: early stopping needs a validation split.*0\.0"):
        check_validation(cfg, 0)
    check_validation(cfg, 10)
    check_validation(load_config(None, ["data.splits=[0.9, 0.0, 0.1]"]), 0)  # no patience: nothing to stop


def test_transferability_definition() -> None:
    assert transferability(0.80, 0.70, 0.76) == pytest.approx(0.6)
    assert math.isnan(transferability(0.70, 0.72, 0.75))  # no teacher gain: undefined


def _tiny_log(n: int = 512) -> TensorLog:
    g = torch.Generator().manual_seed(0)
    return TensorLog(cat=torch.randint(0, 5, (n, 2), generator=g), dense=torch.randn(n, 3, generator=g),
                     seq=torch.zeros(n, 0, 1, dtype=torch.long), label=(torch.rand(n, generator=g) < 0.3).float(),
                     sample_rate=torch.ones(n), row_id=torch.arange(n))


def test_forward_distillation_records_logits_before_each_update() -> None:
    """The recorded logit of batch k equals what the teacher, as it was after k updates, says."""
    data = _tiny_log()
    spec = FeatureSpec(buckets=(5, 5), num_dense=3)
    torch.manual_seed(1)
    teacher = Ranker(spec, "dnn", 4, 1, 8)
    snapshots = []
    orig_forward = teacher.forward

    def spy(*args, **kwargs):  # keep a copy of the weights each forward sees
        snapshots.append({k: v.detach().clone() for k, v in teacher.state_dict().items()})
        return orig_forward(*args, **kwargs)

    teacher.forward = spy
    _, recorded = fit(teacher, data, epochs=2, batch_size=128, lr=1e-2, embedding_lr=1e-2,
                      device=torch.device("cpu"), record=True)
    assert recorded is not None and not torch.isnan(recorded).any()
    check = Ranker(spec, "dnn", 4, 1, 8)
    for k in (0, 3):
        check.load_state_dict(snapshots[k])
        with torch.no_grad():
            b = data.take(slice(128 * k, 128 * (k + 1)))
            expected = check(b.cat, b.dense, b.seq)[0]
        assert torch.allclose(recorded[128 * k:128 * (k + 1)], expected, atol=1e-6)
    # and it differs from what the final teacher says: the rows were not seen yet
    teacher.forward = orig_forward
    with torch.no_grad():
        final = teacher(data.cat[:128], data.dense[:128], data.seq[:128])[0]
    assert not torch.allclose(recorded[:128], final, atol=1e-3)


def test_sample_index_ratio_and_negative_keep() -> None:
    data = _tiny_log(20_000)
    idx = sample_index(data, 0.5, 1.0, seed=3)
    assert len(idx) == pytest.approx(10_000, rel=0.05)
    idx2 = sample_index(data, 1.0, 0.2, seed=3)
    y = data.label[idx2]
    assert int(y.sum()) == int(data.label.sum())
    assert int((1 - y).sum()) == pytest.approx(0.2 * int((1 - data.label).sum()), rel=0.08)


def test_run_experiment_writes_results(tmp_path: Path, ray_local) -> None:
    cfg = load_config(None, [
        "data.rows=20000", "data.days=2", "data.synthetic.num_users=2000",
        "data.synthetic.max_cardinality=20000", "teacher.arch=dcnv2", "teacher.depth=1", "teacher.width=32",
        "teacher.embed_dim=8", "students.0.embed_dim=4", "students.0.width=16", "students.0.depth=1",
        "students.1.name=single", "students.1.towers=single", "students.1.embed_dim=4",
        "students.1.width=16", "students.1.depth=1", "students.1.arch=deepfm", f"run.dir={tmp_path}",
        # the single-process engine: tests/test_distributed.py runs the Ray engine against it
        "run.engine=local",
        # a teacher that trains on after recording; students validated per epoch / every 3 steps
        "teacher.epochs=2", "teacher.patience=0", "students.0.epochs=3", "students.0.patience=1",
        "students.1.eval_every=3", "students.1.epochs=1", "students.1.patience=0"])
    r = run_experiment(cfg, log=lambda _: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["teacher"]["auc"] == pytest.approx(r["teacher"]["auc"])
    assert 0.5 < saved["teacher"]["auc"] < saved["oracle"]["auc"]
    # η's teacher is the one the signals came from (after its first pass), the one trained on is beside it
    t = saved["teacher"]
    assert t["signal_auc"] == t["auc"] and t["steps"] == 2 * t["pass_steps"]
    assert t["final"]["epochs"] == t["stopped_epoch"] == 2 and t["final"]["auc"] != t["auc"]
    assert [c["epoch"] for c in t["valid_curve"]] == [1, 2] and t["best_epoch"] in (1, 2)
    assert 0.5 < t["signal_auc_history"] < 1 and 0.5 < t["signal_auc_window"] < 1
    for st in saved["students"]:
        assert st["eta"] == pytest.approx(transferability(t["auc"], st["auc_raw"], st["auc_distill"]))
    s0, s1 = saved["students"]
    for kind in ("raw", "distill"):
        curve = s0[f"valid_curve_{kind}"]
        assert len(curve) == s0[f"stopped_epoch_{kind}"] <= 3 and s0[f"best_epoch_{kind}"] >= 1
        assert all(c["step"] % 3 == 0 for c in s1[f"valid_curve_{kind}"][:-1]) and s1[f"stopped_epoch_{kind}"] == 1
        assert s1[f"valid_curve_{kind}"][-1]["step"] == s1[f"steps_{kind}"]
    assert "| raw 1 (1), distilled 1 (1) |" in (tmp_path / "report.md").read_text()
    # the single-process engine leaves its models too, and times each distilled student's export
    assert sorted(saved["models"]["written"]) == sorted(["teacher", "student/raw", "student/distill", "single/raw",
                                                          "single/distill"])
    assert all(s["serving"]["measured"][0]["batch"]["512"]["rows_per_s"] > 0 for s in saved["students"])
    assert [s["name"] for s in saved["students"]] == ["student", "single"]
    for s in saved["students"]:
        assert {"params", "auc_raw", "auc_distill", "eta"} <= set(s)
        assert s["signal_coverage"] == 1.0
        assert 0.5 < s["auc_raw"] < 1 and 0.5 < s["auc_distill"] < 1
    # config.yaml holds the resolved config: every auto key a number, the ones set by hand kept
    resolved = load_config(tmp_path / "config.yaml")
    derived = saved["data"]["derived"]
    assert resolved.teacher.batch_size == derived["teacher"]["batch_size"] == 128  # 16k rows: the smallest batch
    assert resolved.teacher.epochs == 2 and resolved.students[0].epochs == 3 and resolved.students[1].eval_every == 3
    assert resolved.students[1].patience == 0 and resolved.students[0].patience == 1
    assert resolved.data.buckets == "max"  # synthetic ids are identity-encoded: no field is hashed
    keys = ("batch_size", "epochs", "eval_every", "patience", "lr", "embedding_lr")
    assert all(getattr(m, k) != "auto" for m in (resolved.teacher, *resolved.students) for k in keys)
    assert "η" in (tmp_path / "report.md").read_text()


def test_seeds_run_each_seed_and_report_intervals(tmp_path: Path, ray_local) -> None:
    """run.seeds=2 on the single-process engine: one complete run per seed under seeds/, one
    synthetic log for both, and results.json with the means, per-seed values and intervals."""
    cfg = load_config(None, [
        "data.rows=6000", "data.days=2", "data.synthetic.num_users=500", "data.synthetic.max_cardinality=5000",
        "teacher.depth=1", "teacher.width=16", "teacher.embed_dim=4", "teacher.epochs=1",
        "students.0.embed_dim=4", "students.0.width=8", "students.0.depth=1", "students.0.epochs=1",
        "students.1.name=single", "students.1.towers=single", "students.1.embed_dim=4", "students.1.width=8",
        "students.1.depth=1", "students.1.epochs=1", "run.engine=local", "run.seeds=[3, 8]",
        "run.bootstrap=30", "run.pairs=[[single, student]]", "run.serving=off", f"run.dir={tmp_path}"])
    r = run_experiment(cfg, log=lambda _: None)
    seeds = [json.loads((tmp_path / "seeds" / f"seed-{s}" / "results.json").read_text()) for s in (3, 8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["config.yaml", "data", "seeds", "results.json", "report.md", "report.html", "raw_to_distilled.png",
         "metrics.jsonl", "wandb"])  # its own tracking: the figures over seeds
    assert not (tmp_path / "seeds" / "seed-3" / "data").exists()  # the log is generated once, in the run's data/
    assert seeds[0]["teacher"]["auc"] != seeds[1]["teacher"]["auc"]  # another seed, another teacher
    assert r["teacher"]["auc"] == pytest.approx((seeds[0]["teacher"]["auc"] + seeds[1]["teacher"]["auc"]) / 2)
    assert len(seeds[0]["teacher"]["auc_boot"]) == 30 and len(seeds[0]["students"][0]["auc_boot_distill"]) == 30
    s = r["summary"]
    assert s["seeds"] == 2 and s["noise"] == "seeds and test rows"
    assert s["models"]["student/raw"]["auc"]["values"] == [x["students"][0]["auc_raw"] for x in seeds]
    names = [d["name"] for d in s["differences"]]
    assert names == ["student: distilled − raw", "single: distilled − raw", "single − student: distilled AUC",
                     "single − student: η"]  # the pair named is the first-student comparison: listed once
    for d in s["differences"]:
        lo, hi = d["ci"]
        assert lo <= d["mean"] <= hi or d.get("undefined_share")
    md = (tmp_path / "report.md").read_text()
    assert "## Intervals (95%, over 2 seeds and 30 resamples of the test rows)" in md
    assert "| student: distilled − raw |" in md and ("within noise" in md or "**finding**" in md)
    # each seed's own run carries its test-row intervals too
    assert seeds[0]["summary"]["noise"] == "test rows"
    assert load_config(tmp_path / "config.yaml").run.seeds == [3, 8]


@pytest.mark.parametrize(("extra", "reason"), [
    ([], None),
    (["run.pack_seeds=false"], "run.pack_seeds=false"),
    (["run.engine=local"], "the local engine"),
    (["committee.experts=2", "students.0.distill_from=committee"], "committee"),
    (["teacher.representations=true", "students.0.representations.use=[user]"], "representations"),
    (["run.cold_users=2"], "run.cold_users"),
    (["platform.students_follow=yes"], "follow its own teacher"),
])
def test_seeds_pack_into_one_students_pass_where_they_can(extra: list[str], reason: str | None) -> None:
    from recdistill.engine.packed_seeds import pack_refusal

    got = pack_refusal(load_config(None, ["run.seeds=2", *extra]))
    assert got is None if reason is None else reason in got, got
