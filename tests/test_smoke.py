"""The smoke test's one definition: what it shrinks, and that a sweep's overrides and a
run's smoke_test give the same experiment."""

from __future__ import annotations

from pathlib import Path

import pytest

from recdistill.config import load_config
from recdistill.smoke import smoke_overrides, smoke_test

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_smoke_overrides_and_smoke_test_are_one_experiment(config: Path) -> None:
    cfg = load_config(config)
    shrunk = smoke_test(cfg)
    assert shrunk.run.name == f"{cfg.run.name}-smoke"
    via_overrides = load_config(config, [*smoke_overrides(cfg), f"run.name={cfg.run.name}-smoke"])
    assert via_overrides == shrunk


def test_smoke_test_shrinks_a_synthetic_log_and_every_model() -> None:
    cfg = load_config(CONFIGS[0].with_name("online_demo.yaml"), ["students.1.name=wide", "students.1.tower_width=8",
                                                                 "students.1.batch_size=512"])
    s = smoke_test(cfg)
    assert (s.data.rows, s.data.days, s.data.synthetic.num_users, s.data.synthetic.max_cardinality) == \
        (20_000, 2, 2_000, 20_000)
    assert s.data.synthetic.drift.shift_days == [1]  # day 8 of 12 keeps its place in a 2-day log
    assert (s.teacher.embed_dim, s.teacher.depth, s.teacher.width, s.teacher.epochs, s.teacher.batch_size) == \
        (8, 1, 32, 1, 4096)
    assert [(st.embed_dim, st.depth, st.width, st.epochs, st.tower_width, st.batch_size) for st in s.students] == \
        [(4, 1, 16, 1, 16, 2048), (4, 1, 16, 1, 8, 512)]
    assert (s.stream.windows, s.stream.batch_windows, s.stream.replay_capacity) == (5, 2, 5000)
    assert (s.transfer.eval_every, s.transfer.eval_rows) == (10, 5000)


def test_a_real_log_keeps_its_rows() -> None:
    cfg = load_config(CONFIGS[0].with_name("real_sample.yaml"))
    assert cfg.data.source != "synthetic"
    assert smoke_test(cfg).data == cfg.data
    assert not any(o.startswith("data.") for o in smoke_overrides(cfg))
