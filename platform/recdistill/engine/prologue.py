"""What every run does before its first model: claim the run directory, write the
config, join or start Ray, prepare the log and write the config with its auto keys
resolved. One place, so the local, Ray, online and transfer runs start alike."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig
from recdistill.ray_env import ensure_ray
from recdistill.run_dir import open_run_dir, write_resolved_config


@dataclass
class Opened:
    out: Path  # the claimed run directory
    t_start: float  # perf_counter at the start: results' "seconds" count from here


def open_run(cfg: ExperimentConfig) -> Opened:
    """Claim ``run.out_dir`` (its config.yaml written) and join or start Ray."""
    t_start = time.perf_counter()
    out = open_run_dir(cfg)
    ensure_ray()
    return Opened(out, t_start)


def prepare(cfg: ExperimentConfig, log: Callable[[str], None], where: str = "") -> Any:
    """The log prepared (``engine.prepare.prepare_log``) and the resolved config written beside
    the results; ``PreparedLog.cfg`` is the config every later stage must use."""
    from recdistill.engine.prepare import prepare_log

    log(f"[data] preparing {cfg.data.source} log (splits {cfg.data.splits}){where}")
    prepared = prepare_log(cfg, log=log)
    write_resolved_config(prepared.cfg)
    return prepared


def driver_name(cfg: ExperimentConfig) -> str:
    """Unique per driver: Ray Train resumes a run whose name and storage path it has seen
    before, which would silently restore a finished teacher and write no signals."""
    return f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
