"""A 1→N experiment repeated over paired seeds (``run.seeds``).

``run_seeds`` runs the experiment once per seed into ``seeds/seed-<s>/`` under the run
directory (each a complete run: results.json, report, its own teacher key), sharing one
synthetic log (on Ray, where it can, every seed's students train in one pass:
``engine.packed_seeds``; else the seeds run one after another), and writes the run's
results.json: the means over seeds in the usual shape (so sweeps, trackers and
``recdistill report`` read it as any run), each seed's figures under ``per_seed``, and
``summary`` with intervals (``summary.summarize``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig
from recdistill.summary import SEEDS_DIR, over_seeds


def tracking_group(cfg: ExperimentConfig) -> str:
    """The W&B group of a run over seeds: its seeds' runs and its own summary run."""
    return cfg.tracking.group or f"{cfg.run.name}-seeds"


def seed_config(cfg: ExperimentConfig, seed: int, out: Path) -> ExperimentConfig:
    """The config of one seed's run: its own directory and name, the run's W&B group; a
    synthetic log generated once, in the parent run's data/."""
    data = cfg.data
    if data.source == "synthetic" and not data.path:
        data = dataclasses.replace(data, path=str(out / "data"))
    run = dataclasses.replace(cfg.run, seed=seed, seeds=1, name=f"{cfg.run.name}-seed{seed}",
                              dir=str(out / SEEDS_DIR / f"seed-{seed}"), overwrite=False)
    return dataclasses.replace(cfg, data=data, run=run,
                               tracking=dataclasses.replace(cfg.tracking, group=tracking_group(cfg)))


def run_seeds(cfg: ExperimentConfig, run_one: Callable[[ExperimentConfig, Callable[[str], None]], dict[str, Any]],
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``run_one`` (an engine) once per seed of ``run.seeds``; write and return the
    results over seeds."""
    from recdistill.config import to_dict
    from recdistill.engine.on_ray import run_on_ray
    from recdistill.engine.packed_seeds import pack_refusal
    from recdistill.engine.prologue import Opened
    from recdistill.report.experiment import write_results
    from recdistill.run_dir import open_run_dir
    from recdistill.tracking import make_trackers

    t0 = time.perf_counter()
    out = open_run_dir(cfg)
    seeds = cfg.run.seed_list
    # only the Ray engine's seeds pack (a caller's own run_one runs each seed itself)
    refusal = pack_refusal(cfg) or (None if run_one is run_on_ray else "this engine runs each seed itself")
    if refusal is None:
        from recdistill.engine.packed_seeds import run_packed_seeds

        log(f"[seeds] seeds {seeds}: each seed's teacher, then every seed's students in one pass → "
            f"{out / SEEDS_DIR}/seed-<s>")
        per_seed = run_packed_seeds([seed_config(cfg, s, out) for s in seeds], log)
    else:
        log(f"[seeds] one seed after another ({refusal})")
        per_seed = []
        for k, s in enumerate(seeds):
            log(f"[seeds] seed {s} ({k + 1}/{len(seeds)}) → {out / SEEDS_DIR / f'seed-{s}'}")
            per_seed.append(run_one(seed_config(cfg, s, out), log))
    results = over_seeds(per_seed, seeds, cfg.run.pairs)
    results["seconds"] = time.perf_counter() - t0
    # the seeds' runs tracked their own training; this one holds the figures over them
    opened = Opened(out, t0, make_trackers(cfg.tracking, out, cfg.run.name, to_dict(cfg), group=tracking_group(cfg),
                                           job_type="seeds", stdout=False))
    results["tracking"] = opened.tracking_info()
    opened.finish(results, write_results(cfg, results, log))
    return results


