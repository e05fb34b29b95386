"""Every shipped search space loads, names only config paths that exist, and resolves
into trials the way Tune's variant generator would (plain Python, no Ray cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import tune

from recdistill.config import ConfigError
from recdistill.report.sweep import pareto_front
from recdistill.sweep.space import SearchSpace, check_space, load_space, trial_overrides

ROOT = Path(__file__).parents[2]
SPACES = sorted((ROOT / "search_spaces").glob("*.py"))
REQUIRED = {"alpha", "tau", "sampling", "student_shape", "full"}


def _specs() -> list[str]:
    out = []
    for p in SPACES:
        out.append(str(p))
        text = p.read_text()
        # extra spaces in a file: module-level dicts named in capitals other than SPACE
        out += [f"{p}:{line.split('=')[0].strip()}" for line in text.splitlines()
                if line and line[0].isupper() and "= {" in line and not line.startswith(("SPACE", "NUM_"))]
    return out


def test_the_required_spaces_are_shipped() -> None:
    assert REQUIRED <= {p.stem for p in SPACES}


@pytest.mark.parametrize("spec", _specs(), ids=lambda s: Path(s.split(":")[0]).stem + (":" + s.split(":")[1]
                                                                                       if ":" in s else ""))
def test_space_paths_exist_in_the_experiment_config(spec: str) -> None:
    space = load_space(spec)
    assert space.doc and "Hypothesis" in space.doc and "Budget" in space.doc, "docstring: hypothesis and budget"
    n = check_space(space, ROOT / "jobs" / "configs" / "demo.yaml")
    assert n >= 1


def test_a_wrong_path_is_named() -> None:
    bad = SearchSpace("bad", "", {"students.0.alpah": tune.uniform(0, 1)}, 1)
    with pytest.raises(ConfigError, match="alpah"):
        check_space(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_space("search_spaces/nope.py")


def test_trials_are_the_grid_times_the_samples_and_reproducible() -> None:
    space = SearchSpace("s", "", {"students.0.alpha": tune.loguniform(0.1, 10),
                                  "students.0.width": tune.grid_search([16, 32]),
                                  ("students.0.depth", "students.0.embed_dim"): tune.grid_search([(1, 4), (2, 8)])}, 3)
    trials = trial_overrides(space)
    assert len(trials) == 2 * 2 * 3
    assert trials == trial_overrides(space)  # same seed, same draws
    assert {(t["students.0.width"], t["students.0.depth"], t["students.0.embed_dim"]) for t in trials} == \
        {(w, d, e) for w in (16, 32) for d, e in ((1, 4), (2, 8))}
    assert all(0.1 <= t["students.0.alpha"] <= 10 for t in trials)
    assert len({t["students.0.alpha"] for t in trials}) == len(trials)


def test_pareto_front() -> None:
    pts = [(10, 0.70), (20, 0.72), (15, 0.69), (30, 0.71), (40, 0.75), (5, 0.60)]
    assert pareto_front(pts) == [5, 0, 1, 4]


def test_smoke_sweep_overrides_let_the_users_values_win_and_shrink_a_stream_first() -> None:
    """`recdistill sweep --smoke-test stream.windows=3` on online_demo.yaml (batch_windows=6):
    refused before, as 3 windows are fewer than the file's 6 batch ones until the smoke
    test's batch_windows=2 applies; and a value the user typed wins over the smoke test's."""
    from recdistill.config import load_config
    from recdistill.sweep.cli import base_overrides

    config = str(Path(__file__).parents[2] / "jobs" / "configs" / "online_demo.yaml")
    assert load_config(config, []).stream.batch_windows > 3
    with pytest.raises(ConfigError, match="stream.batch_windows"):
        load_config(config, ["stream.windows=3"])
    over = base_overrides(config, ["stream.windows=3", "data.rows=12000"], smoke=True)
    cfg = load_config(config, over)
    assert (cfg.stream.windows, cfg.stream.batch_windows, cfg.data.rows) == (3, 2, 12000)
    assert base_overrides(config, ["data.rows=12000"], smoke=False) == ["data.rows=12000"]
