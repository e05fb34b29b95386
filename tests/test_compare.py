"""``recdistill compare``: runs and sweeps side by side with intervals (results files
written here in the shapes the runs and sweeps write; no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recdistill.cli import main
from recdistill.compare import CompareError, compare


def _results(seed: int, gain: float) -> dict:
    rng = np.random.default_rng(seed)
    raw = 0.70 + 0.004 * rng.normal()
    dev = np.random.default_rng(100 + seed).normal(0, 0.002, 30).tolist()  # the same rows in every run
    return {"engine": "local", "teacher": {"arch": "dcnv2", "params": 1, "auc": 0.76 + 0.002 * rng.normal(),
                                           "logloss": 0.4, "calibration": 0.0, "auc_boot": dev, "test_rows": 500},
            "students": [{"name": "s", "arch": "dnn", "towers": "single", "params": 1, "auc_raw": raw,
                          "auc_distill": raw + gain + 0.0005 * rng.normal(), "eta": 0.5, "auc_boot_raw": dev,
                          "auc_boot_distill": dev}]}


def _seeded_run(directory: Path, gain: float, seeds: tuple[int, ...] = (0, 1, 2)) -> Path:
    per = []
    for s in seeds:
        d = directory / "seeds" / f"seed-{s}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(_results(s, gain)))
        per.append({"seed": s, "dir": f"seeds/seed-{s}"})
    top = _results(seeds[0], gain)
    top["per_seed"] = per
    (directory / "results.json").write_text(json.dumps(top))
    return directory


def test_paired_runs_a_real_difference_is_a_finding(tmp_path: Path) -> None:
    a = _seeded_run(tmp_path / "a", 0.010)
    b = _seeded_run(tmp_path / "b", 0.004)
    same = _seeded_run(tmp_path / "c", 0.010)
    c = compare([a, b, same], "gain")
    assert c["paired"]
    assert [r["entry"] for r in c["entries"]] == ["a:s", "b:s", "c:s"]
    assert c["entries"][0]["mean"] == pytest.approx(0.010, abs=1e-3)
    d_b, d_same = c["differences"]
    assert d_b["finding"] and d_b["ci"][1] < 0 and d_b["mean"] == pytest.approx(-0.006, abs=1e-3)
    assert not d_same["finding"] and d_same["mean"] == pytest.approx(0.0, abs=1e-9)
    eta = compare([a, b], "eta")
    assert eta["entries"][0]["ci"][0] < eta["entries"][0]["mean"] < eta["entries"][0]["ci"][1]


def test_runs_over_other_seeds_are_compared_unpaired(tmp_path: Path) -> None:
    a = _seeded_run(tmp_path / "a", 0.010)
    b = _seeded_run(tmp_path / "b", 0.004, seeds=(5, 6, 7))
    c = compare([a, b], "auc_distill")
    assert not c["paired"] and len(c["differences"]) == 1
    lo, hi = c["differences"][0]["ci"]
    assert lo < c["differences"][0]["mean"] < hi


def test_sweep_trials_are_entries_and_the_cli_writes_table_and_plot(tmp_path: Path, capsys) -> None:
    runs = [_seeded_run(tmp_path / "sweep" / "trials" / f"t{i}", g) for i, g in enumerate((0.01, 0.002))]
    (tmp_path / "sweep" / "results.json").write_text(json.dumps({"trials": [
        {"trial": i, "config": {"students.0.alpha": a}, "dir": str(r), "student_index": 0}
        for i, (r, a) in enumerate(zip(runs, (1.0, 8.0)))]}))
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "sweep"), "--metric", "gain", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sweep#0 (students.0.alpha=1.0)" in printed and "**finding**" in printed
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.png", "report.html", "report.md"]
    assert json.loads((out / "compare.json").read_text())["differences"][0]["finding"]


def test_by_a_swept_key_compares_each_trial_with_its_level_one_twin(tmp_path: Path, capsys) -> None:
    # 2 signal modes × 2 α: crossfit adds 0.006 of gain at either α, α 8 adds 0.002
    grid = [("forward", 1.0, 0.004), ("forward", 8.0, 0.006), ("crossfit:5", 1.0, 0.010), ("crossfit:5", 8.0, 0.012)]
    runs = [_seeded_run(tmp_path / "sweep" / "trials" / f"t{i}", g) for i, (_, _, g) in enumerate(grid)]
    (tmp_path / "sweep" / "results.json").write_text(json.dumps({"trials": [
        {"trial": i, "config": {"teacher.signals": m, "students.0.alpha": a}, "dir": str(r), "student_index": 0}
        for i, (r, (m, a, _)) in enumerate(zip(runs, grid))]}))
    c = compare([tmp_path / "sweep"], "gain", by="teacher.signals")
    pairs = {(d["entry"].split(" ")[0], d["against"].split(" ")[0]): d for d in c["differences"]}
    assert sorted(pairs) == [("sweep#2", "sweep#0"), ("sweep#3", "sweep#1")]  # the same α, forward
    for d in pairs.values():
        assert d["finding"] and d["mean"] == pytest.approx(0.006, abs=1e-3)
    by_alpha = compare([tmp_path / "sweep"], "gain", by="students.0.alpha")
    assert sorted((d["entry"].split(" ")[0], d["against"].split(" ")[0]) for d in by_alpha["differences"]) == [
        ("sweep#1", "sweep#0"), ("sweep#3", "sweep#2")]
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "sweep"), "--by", "teacher.signals", "--metric", "gain",
                 "--out", str(out)]) == 0
    assert "teacher.signals at its first level" in (out / "report.md").read_text()
    with pytest.raises(CompareError, match=r"--by towers: not a swept key .*swept keys: students.0.alpha, "
                                           r"teacher.signals"):
        compare([tmp_path / "sweep"], by="towers")
    with pytest.raises(CompareError, match="only sweep trials have swept keys"):
        compare([runs[0]], by="teacher.signals")
    # a grid with a hole: no twin at the first level is an error, not a silent skip
    (tmp_path / "sweep" / "results.json").write_text(json.dumps({"trials": [
        {"trial": i, "config": {"teacher.signals": m, "students.0.alpha": a}, "dir": str(r), "student_index": 0}
        for i, (r, (m, a, _)) in enumerate(zip(runs, grid)) if i != 1]}))
    with pytest.raises(CompareError, match=r"sweep#3 .* has no trial with teacher.signals=forward"):
        compare([tmp_path / "sweep"], by="teacher.signals")


def test_not_a_run_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(CompareError, match="no results.json here"):
        compare([tmp_path])
    (tmp_path / "results.json").write_text(json.dumps({"windows": []}))
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a 1→N run or sweep" in capsys.readouterr().err
