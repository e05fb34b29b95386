"""``run_experiment``: the one entry point of a run, above every engine and pipeline.

It picks what ``cfg`` asks for: the transfer stage (``transfer.enabled``), the online
pipeline (``stream.enabled``), or the batch experiment on Ray (``run.engine: ray``,
``engine.on_ray``) or on this process (``engine.local``). Each writes ``results.json``,
the resolved ``config.yaml`` and its report to ``run.out_dir``.
"""

from __future__ import annotations

from typing import Any, Callable

from recdistill.config import ExperimentConfig


def run_experiment(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run with the configured engine (``run.engine``): Ray (default) or this process.
    With ``stream.enabled`` the batch phase is followed by the streaming phase, on Ray;
    with ``transfer.enabled`` the cross-architecture transfer stage runs instead, on Ray.
    With several ``run.seeds`` the batch experiment runs once per seed (``seeds.run_seeds``)."""
    if cfg.transfer.enabled:
        from recdistill.transfer.pipeline import run_transfer

        if cfg.run.engine != "ray":
            log("[run] transfer.enabled: the transfer stage runs on Ray (a local one unless RAY_ADDRESS is set)")
        return run_transfer(cfg, log)
    if cfg.stream.enabled:
        from recdistill.online.pipeline import run_online

        if cfg.run.engine != "ray":
            log("[run] stream.enabled: the online pipeline runs on Ray (a local one unless RAY_ADDRESS is set)")
        return run_online(cfg, log)
    if cfg.run.engine == "ray":
        from recdistill.engine.on_ray import run_on_ray as engine
    else:
        from recdistill.engine.local import run_local as engine
    if len(cfg.run.seed_list) > 1:
        from recdistill.seeds import run_seeds

        return run_seeds(cfg, engine, log)
    return engine(cfg, log)
