"""Run and sweep directories: a new run never writes over an earlier one.

Every engine (local, Ray, online, transfer) starts with ``open_run_dir``: it refuses a
directory that already holds outputs unless ``run.overwrite`` is true (``--overwrite`` on
the command line), in which case the earlier outputs are deleted first, so that no stale
``results.json``, report or plot survives and ``metrics.jsonl`` starts empty. Then it
writes the resolved ``config.yaml``, created exclusively so that two runs racing for one
directory cannot both claim it. ``recdistill report DIR`` is not a run and does not come
here: it rewrites reports in place.

The synthetic log cache (``data/``, where ``recdistill synth`` and a run without
``data.path`` put it) is not a run output: it is kept, and its reuse is checked by its
manifest.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from recdistill.config import ConfigError, ExperimentConfig, dump_config

# Entries of a run directory that belong to the data, not to a run (see data/synthetic.py:
# a generation in progress or killed leaves ``.data.partial-*`` beside ``data``).
_DATA = "data"
_DATA_PARTIAL = ".data.partial-"
# Something a recdistill run or sweep writes: only a directory holding one of these is
# ever emptied by --overwrite (``run.dir=$HOME --overwrite`` must not delete a home).
_MARKERS = ("config.yaml", "results.json", "report.md", "metrics.jsonl", "ray_train", "trials", "packs", "tune",
            "tracking")
HOW = ("pass --overwrite (run.overwrite=true in a config or override, e.g. for `ray job submit ... jobs/distill.py`) "
       "to delete its outputs and run again, or choose another run.name / run.dir")

OVERWRITE_HELP = ("run into a directory that already holds a run: delete its outputs first (its data/ cache stays). "
                  "Without it such a directory is refused; run.overwrite=true says the same in a config")
SWEEP_OVERWRITE_HELP = ("re-run into a sweep directory that holds an earlier sweep: delete its outputs first (its data/ "
                        "stays; stored teachers are reused either way). Without it such a directory is refused; "
                        "run.overwrite=true says the same")


class RunDirError(ConfigError):
    """The run directory holds an earlier run's outputs (or cannot be claimed)."""


def _is_data(name: str) -> bool:
    return name == _DATA or name.startswith(_DATA_PARTIAL)


def earlier_outputs(directory: Path) -> list[str]:
    """Names in ``directory`` that an earlier run or sweep left (the data cache excluded)."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if not _is_data(p.name))


def claim_dir(directory: Path, overwrite: bool, what: str = "run") -> Path:
    """Create ``directory`` or, when it holds earlier outputs, refuse it; with ``overwrite``
    delete those outputs (the data cache stays). ``what`` names it in messages."""
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"{what} directory {directory} is a file, not a directory; choose another run.dir")
    found = earlier_outputs(directory)
    if found:
        shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
        if not overwrite:
            raise RunDirError(f"{what} directory {directory} already holds an earlier {what}'s outputs ({shown}); {HOW}")
        if not any((directory / m).exists() or (directory / m).is_symlink() for m in _MARKERS):
            raise RunDirError(f"{what} directory {directory} holds {shown}, which no recdistill {what} wrote (none of "
                              f"{', '.join(_MARKERS)}): refusing to delete it even with --overwrite; choose another "
                              f"run.dir")
        for name in found:
            p = directory / name
            # a link is removed, never followed: what it points to is not this run's
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _config_text(cfg: ExperimentConfig) -> str:
    # recorded as false: running this config.yaml again must not delete the run it describes
    return dump_config(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, overwrite=False)))


def write_resolved_config(cfg: ExperimentConfig) -> None:
    """Replace the run's config.yaml by ``cfg`` once its auto keys are resolved (``sizing``),
    so that running it again repeats the run exactly, without the statistics pass."""
    path = cfg.run.out_dir / "config.yaml"
    tmp = path.with_name(".config.yaml.tmp")
    tmp.write_text(_config_text(cfg))
    tmp.replace(path)


def open_run_dir(cfg: ExperimentConfig) -> Path:
    """The prologue of every run: claim ``run.out_dir`` and write the config.yaml (its auto
    keys are resolved later, see ``write_resolved_config``)."""
    out = claim_dir(cfg.run.out_dir, cfg.run.overwrite)
    text = _config_text(cfg)
    try:
        with (out / "config.yaml").open("x") as f:
            f.write(text)
    except FileExistsError:
        raise RunDirError(f"run directory {out} was claimed by another run while this one started "
                          f"(its config.yaml appeared); {HOW}") from None
    return out
