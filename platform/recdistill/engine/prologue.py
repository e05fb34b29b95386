"""What every run does before its first model: claim the run directory, write the
config, join or start Ray, prepare the log and write the config with its auto keys
resolved. One place, so the local, Ray, online and transfer runs start alike."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig, to_dict
from recdistill.ray_env import ensure_ray
from recdistill.run_dir import open_run_dir, write_resolved_config
from recdistill.tracking import Trackers, make_trackers, run_summary


@dataclass
class Opened:
    out: Path  # the claimed run directory
    t_start: float  # perf_counter at the start: results' "seconds" count from here
    trackers: Trackers  # the run's JSONL log and W&B run (tracking.*), live from here on
    started: float = field(default_factory=time.time)  # the wall clock at t_start (workers' times compare to it)

    def tracking_info(self) -> dict[str, Any]:
        """Where this run's tracking went, for its results.json."""
        info: dict[str, Any] = {"wandb_run_id": self.trackers.wandb_run_id()}
        if (self.out / "metrics.jsonl").exists():
            info["jsonl"] = "metrics.jsonl"
        return info

    def finish(self, results: dict[str, Any], written: list[Path]) -> None:
        """The run's figures as the trackers' summary, its outputs as an artifact and its plots
        as images; then close them."""
        self.trackers.summary(run_summary(results))
        self.trackers.artifact(f"{self.out.name}-outputs", "run-outputs", [p for p in written if p.exists()])
        for p in written:
            if p.suffix == ".png" and p.exists():
                self.trackers.image(p.stem, p)
        self.log_models(results)
        self.trackers.finish()

    def log_models(self, results: dict[str, Any]) -> None:
        """Each model artifact the run wrote, as a tracker artifact of type ``model`` with its
        manifest as metadata."""
        from recdistill.artifacts.model_dir import read_manifest

        for name, rel in (results.get("models") or {}).get("written", {}).items():
            directory = self.out / rel
            manifest = read_manifest(directory)
            self.trackers.artifact(f"{self.out.name}-{name}", "model", [directory],
                                   {**{k: v for k, v in manifest.items() if k != "files"},
                                    "files": {f: e["sha256"] for f, e in manifest["files"].items()}})


def open_run(cfg: ExperimentConfig) -> Opened:
    """Join or start Ray, claim ``run.out_dir`` (its config.yaml written) and open the run's
    trackers with its config."""
    from recdistill.engine.trainer import check_device

    t_start, started = time.perf_counter(), time.time()
    ensure_ray()
    check_device(cfg)  # before the run directory is claimed, so the corrected command needs no --overwrite
    out = open_run_dir(cfg)
    trackers = make_trackers(cfg.tracking, out, cfg.run.name, to_dict(cfg), group=cfg.tracking.group, job_type="run",
                             stdout=False)
    return Opened(out, t_start, trackers, started)


def prepare(cfg: ExperimentConfig, log: Callable[[str], None], where: str = "", opened: Opened | None = None,
            raw_train_hook: Callable[[Any], Any] | None = None) -> Any:
    """The log prepared (``engine.prepare.prepare_log``) and the resolved config written beside
    the results (and given to the run's trackers); ``PreparedLog.cfg`` is the config every
    later stage must use."""
    from recdistill.engine.prepare import prepare_log

    log(f"[data] preparing {cfg.data.source} log (splits {cfg.data.splits}){where}")
    prepared = prepare_log(cfg, log=log, raw_train_hook=raw_train_hook)
    write_resolved_config(prepared.cfg)
    if opened is not None:
        opened.trackers.update_config(to_dict(prepared.cfg))
    return prepared


def driver_name(cfg: ExperimentConfig) -> str:
    """Unique per driver: Ray Train resumes a run whose name and storage path it has seen
    before, which would silently restore a finished teacher and write no signals."""
    return f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
