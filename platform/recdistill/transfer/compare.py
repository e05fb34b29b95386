"""Sampling strategies side by side at the same expected sample budget: one transfer run
per strategy (teacher trained once, then reused from the signal store), one table."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from recdistill.config import ConfigError, ExperimentConfig

STRATEGIES = ("all", "random", "biased", "temporal", "recent", "mixture")


def compare_sampling(cfg: ExperimentConfig, strategies: list[str], variant: str = "progressive",
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``variant`` once per strategy under ``<run dir>/sampling-<strategy>``; write
    ``sampling.json`` and ``sampling.md`` in the run directory."""
    from recdistill.transfer.pipeline import run_transfer

    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        raise ConfigError(f"--compare-sampling: unknown strategies {bad}; expected some of {', '.join(STRATEGIES)}")
    out = cfg.run.out_dir
    rows = []
    for strategy in strategies:
        sub = dataclasses.replace(
            cfg, transfer=dataclasses.replace(cfg.transfer, variants=[variant], sampling=dataclasses.replace(
                cfg.transfer.sampling, strategy=strategy)),
            run=dataclasses.replace(cfg.run, name=f"{cfg.run.name}-{strategy}", dir=str(out / f"sampling-{strategy}")))
        log(f"[compare] sampling={strategy}, budget {cfg.transfer.sampling.budget}")
        r = run_transfer(sub, log)
        v = r["variants"][variant]
        rows.append({"strategy": strategy, "budget": cfg.transfer.sampling.budget if strategy != "all" else 1.0,
                     "train_rows": r["data"]["train_rows"], "positive_rate": r["data"]["train_positive_rate"],
                     "augmented_rows": r["data"]["augmented_rows"], "auc": v["final"]["auc"],
                     "logloss": v["final"]["logloss"], "calibration": v["final"]["calibration"],
                     "steps": v["steps"], "seconds": v["seconds"]})
    table = {"variant": variant, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampling.json").write_text(json.dumps(table, indent=2))
    (out / "sampling.md").write_text(sampling_markdown(table))
    log(sampling_markdown(table))
    return table


def sampling_markdown(table: dict[str, Any]) -> str:
    lines = [f"# Sampling strategies ({table['variant']} student, same expected budget)", "",
             "| strategy | budget | labelled rows | positive rate | augmented rows | AUC | LogLoss | calibration | "
             "steps | training s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in table["rows"]:
        lines.append(f"| {r['strategy']} | {r['budget']:.2f} | {r['train_rows']:,} | {r['positive_rate']:.3f} | "
                     f"{r['augmented_rows']:,} | {r['auc']:.4f} | {r['logloss']:.4f} | {r['calibration']:+.3f} | "
                     f"{r['steps']} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"
