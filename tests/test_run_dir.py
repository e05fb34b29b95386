"""Runs never overwrite each other: a used run or sweep directory is refused unless
``run.overwrite`` (``--overwrite``), which deletes the earlier outputs but keeps data/.

No Ray starts here: every engine refuses the directory before it joins Ray.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recdistill.config import load_config
from recdistill.run_dir import RunDirError, open_run_dir

EARLIER = {"config.yaml": "earlier: run\n", "results.json": '{"earlier": true}', "report.md": "# earlier\n",
           "metrics.jsonl": '{"kind": "config"}\n'}


def _used(run: Path) -> dict[str, str]:
    run.mkdir(parents=True)
    for name, text in EARLIER.items():
        (run / name).write_text(text)
    (run / "data").mkdir()
    (run / "data" / "part-00000.parquet").write_text("cached log")
    return {p.name: p.read_text() for p in run.iterdir() if p.is_file()}


@pytest.mark.parametrize("engine", ["run.engine=local", "run.engine=ray", "stream.enabled=true",
                                    "transfer.enabled=true"])
def test_every_engine_refuses_a_used_run_dir_and_leaves_it_as_it_was(tmp_path: Path, engine: str) -> None:
    from recdistill.experiment import run_experiment

    run = tmp_path / "run"
    before = _used(run)
    # a log that does not exist: were the directory not refused, the run would fail later, differently
    cfg = load_config(None, [engine, f"run.dir={run}", "data.source=parquet", f"data.path={tmp_path / 'none'}",
                             "platform.teacher_workers=1"])
    with pytest.raises(RunDirError) as e:
        run_experiment(cfg, log=lambda _: None)
    assert str(run) in str(e.value) and "--overwrite" in str(e.value) and "run.name" in str(e.value)
    assert {p.name: p.read_text() for p in run.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in run.iterdir()) == sorted([*EARLIER, "data"])


def test_overwrite_deletes_earlier_outputs_keeps_the_data_cache_and_follows_no_link(tmp_path: Path) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    _used(run)
    (run / "ray_train" / "teacher").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep.txt").write_text("not the run's")
    (run / "linked").symlink_to(outside, target_is_directory=True)
    cfg = load_config(None, [f"run.dir={run}", "run.overwrite=true", "students.0.alpha=3"])
    assert open_run_dir(cfg) == run
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "data"]
    assert (run / "data" / "part-00000.parquet").read_text() == "cached log"
    assert (outside / "keep.txt").read_text() == "not the run's"
    saved = load_config(run / "config.yaml")
    assert saved.students[0].alpha == 3
    # recorded as false: running the saved config again must not delete this run
    assert saved.run.overwrite is False


def test_only_the_data_cache_is_not_an_earlier_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)  # `recdistill synth` writes <run.dir>/data before the run
    (run / ".data.partial-host-1").mkdir()  # a generation killed beside it
    open_run_dir(load_config(None, [f"run.dir={run}"]))
    assert (run / "config.yaml").is_file()


def test_overwrite_never_empties_a_directory_no_run_wrote(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="no recdistill run wrote"):
        open_run_dir(load_config(None, [f"run.dir={tmp_path}", "run.overwrite=true"]))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_and_job_refuse_with_the_directory_and_how_to_proceed(tmp_path: Path, capsys) -> None:
    from recdistill.cli import build_parser, main

    run = tmp_path / "run"
    _used(run)
    assert main(["run", f"run.dir={run}", "run.engine=local"]) == 2
    err = capsys.readouterr().err
    assert f"run directory {run} already holds" in err and "--overwrite" in err
    assert build_parser().parse_args(["run", "--overwrite", "x=1"]).overwrite
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--overwrite" in capsys.readouterr().out

    import importlib.util

    spec = importlib.util.spec_from_file_location("distill_job", Path(__file__).parents[1] / "jobs" / "distill.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    with pytest.raises(RunDirError, match=str(run)):
        job.main(["--config", str(Path(__file__).parents[1] / "jobs" / "configs" / "demo.yaml"), f"run.dir={run}"])
    assert (run / "config.yaml").read_text() == EARLIER["config.yaml"]


def test_a_sweep_rerun_into_its_directory_must_say_overwrite(tmp_path: Path) -> None:
    from ray import tune

    from recdistill.sweep.runner import run_sweep
    from recdistill.sweep.space import SearchSpace

    out = tmp_path / "sweep"
    (out / "trials" / "000").mkdir(parents=True)
    (out / "results.json").write_text(json.dumps({"trials": []}))
    space = SearchSpace("a", "test", {"students.0.alpha": tune.grid_search([1.0])}, 1)
    with pytest.raises(RunDirError, match=f"sweep directory {out}.*--overwrite"):
        run_sweep(None, [f"platform.signal_store={tmp_path / 'store'}"], space, out, log=lambda _: None)
    assert (out / "trials" / "000").is_dir()
