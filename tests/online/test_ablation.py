"""The online ablations' plan and summaries, with the online runs replaced by made-up results
(no Ray): which runs each ablation asks for, what it reads from them, what it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recdistill.config import ConfigError, ExperimentConfig
from recdistill.online import ablation

CONFIG = str(Path(__file__).resolve().parents[2] / "jobs" / "configs" / "online_demo.yaml")


def _result(cfg: ExperimentConfig) -> dict[str, Any]:
    """Results shaped like run_online's: AUC falling after window 2 unless replay is on."""
    n, replay = cfg.stream.windows, cfg.stream.replay != "off"
    auc = [0.7 - (0.0 if w < 2 or replay else 0.05) + 0.001 * w for w in range(n)]
    stream = {"stream_eta": 0.5, "stream_auc_raw": 0.6, "stream_auc_distill": 0.65, "last_eta": 0.4,
              "last_auc_raw": 0.61, "last_auc_distill": 0.64}
    return {"windows": [{"window": w, "rows": 100, "teacher": {"auc": auc[w], "logloss": 0.4},
                         "students": [{"auc": auc[w] - 0.02, "logloss": 0.45}],
                         "rss_mb": {"teacher": 100.0 + w, "students": 50.0 + 2 * w}} for w in range(n)],
            "teacher": {"steps": 7}, "students": [{"name": s.name, "alpha": s.alpha, **stream} for s in cfg.students],
            "shift": [{"window": w, "fired": w == 2} for w in range(n)], "seconds": 12.0}


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> list[ExperimentConfig]:
    seen: list[ExperimentConfig] = []

    def fake(cfg: ExperimentConfig) -> dict[str, Any]:
        seen.append(cfg)
        return _result(cfg)

    monkeypatch.setattr(ablation, "run_online", fake)
    return seen


def test_parse_taus_reads_every_spelling_of_a_frozen_teacher() -> None:
    assert ablation.parse_taus("1,10,inf,null,none") == [1, 10, None, None, None]
    assert [ablation.tau_label(t) for t in (1, None)] == ["1", "inf"]


def test_stability_is_mean_std_and_worst_drop() -> None:
    s = ablation.stability([0.7, 0.8, 0.6, 0.65])
    assert s["mean"] == pytest.approx(0.6875)
    assert s["worst_drop"] == pytest.approx(-0.2)
    assert ablation.stability([0.7, 0.8])["worst_drop"] == 0.0  # never drops
    assert ablation.stability([0.7]) == {"mean": 0.7, "std": 0.0, "worst_drop": 0.0}


def test_all_ablations_run_each_shared_run_once(tmp_path: Path, online: list[ExperimentConfig]) -> None:
    s = ablation.run_ablations(CONFIG, ["students.0.alpha=2"], tmp_path, taus=[1, None], memory_windows=[3, 4],
                               memory_rows_per_window=500)
    # the config's own τ (10) is not among the τ values: drift and replay add its run
    assert [c.run.name for c in online] == ["tau1", "tauinf", "tau10", "replay-off", "memory3", "memory4"]
    for c in online:
        assert c.stream.enabled and c.students[0].alpha == 2 and c.run.dir == str(tmp_path / "runs" / c.run.name)
    assert [c.stream.teacher_update_interval for c in online[:3]] == [1, None, 10]
    assert online[3].stream.replay == "off"
    memory = online[4]
    assert (memory.stream.windows, memory.stream.batch_windows, memory.data.rows) == (3, 2, 1500)
    assert (memory.teacher.embed_dim, memory.teacher.width, memory.students[0].width) == (8, 64, 16)

    assert list(s["tau"]) == ["1", "inf"] and s["tau"]["1"]["teacher_steps"] == 7
    assert s["tau"]["1"]["students"][0]["stream_eta"] == 0.5 and "alpha" not in s["tau"]["1"]["students"][0]
    assert s["drift"] == [{"name": "decoupled", "stream_eta": 0.5, "stream_auc_raw": 0.6, "stream_auc_distill": 0.65,
                           "last_eta": 0.4, "last_auc_raw": 0.61, "last_auc_distill": 0.64}]
    replay = s["replay"]
    assert (replay["first_fired"], replay["fired"]) == (2, [2])
    assert replay["adaptive"]["teacher_auc"] - replay["off"]["teacher_auc"] == pytest.approx(0.05)
    assert replay["off"]["students"]["decoupled"] == pytest.approx(0.7 - 0.05 + 0.001 * 6.5 - 0.02)  # windows 2..11
    assert s["memory"]["4"] == {"windows": 4, "rows": 400, "teacher_rss_mb_first": 100.0, "teacher_rss_mb_max": 103.0,
                                "students_rss_mb_first": 50.0, "students_rss_mb_max": 56.0, "seconds": 12.0}
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(s))
    md = (tmp_path / "summary.md").read_text()
    assert md == ablation.markdown(s)
    for heading in ("# Online ablations", "## Teacher update interval τ", "## Streaming distillation",
                    "## Replay after a detected shift", "## Memory over windows"):
        assert heading in md
    assert "| adaptive | 0.7" in md and "| 4 | 400 | 100 → 103 | 50 → 56 | 12 |" in md
    assert (tmp_path / "tau.png").stat().st_size > 0


def test_only_and_smoke_shrink_the_plan(tmp_path: Path, online: list[ExperimentConfig]) -> None:
    s = ablation.run_ablations(CONFIG, [], tmp_path, only=["replay"], smoke=True, overwrite=True)
    assert [c.run.name for c in online] == ["tau10-smoke", "replay-off-smoke"]
    assert all(c.run.overwrite and c.data.rows == 20_000 and c.stream.windows == 5 for c in online)
    assert set(s) == {"config", "smoke_test", "replay"} and s["smoke_test"] is True
    assert ablation.markdown(s).startswith(f"# Online ablations ({CONFIG}, smoke test)")
    assert not (tmp_path / "tau.png").exists()


def test_replay_without_a_detection_has_no_means() -> None:
    r = _result(ExperimentConfig())
    r["shift"] = [{"window": 0, "fired": False}]
    assert ablation.replay_summary(r, r) == {"first_fired": None, "fired": []}
    assert "Detector fired on windows []." in ablation.markdown({"config": "x", "smoke_test": False,
                                                                 "replay": {"first_fired": None, "fired": []}})


def test_a_bad_config_is_refused_before_any_run(tmp_path: Path, online: list[ExperimentConfig]) -> None:
    with pytest.raises(ConfigError, match="nosuch"):
        ablation.run_ablations(CONFIG, ["stream.nosuch=1"], tmp_path)
    assert online == []
