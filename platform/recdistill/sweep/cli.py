"""The sweep command line, shared by ``jobs/sweep.py`` and ``recdistill sweep``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", required=True, help="search_spaces/FILE.py or FILE.py:NAME")
    p.add_argument("--config", required=True, help="base experiment YAML")
    p.add_argument("--num-samples", type=int, help="draws per grid point (default: the space's NUM_SAMPLES)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: tune.max_concurrent_trials)")
    p.add_argument("--pack", type=int, default=1,
                   help="sweep trials trained as the students of one run (one pass over the distill stream, one "
                        "Ray Train start); for spaces over students.0.* and teacher keys, packed per teacher "
                        "(default 1: a run per trial)")
    p.add_argument("--out", help="sweep directory (default runs/sweeps/<config>-<space>)")
    p.add_argument("--smoke-test", action="store_true",
                   help="tiny log and models, at most 2 samples per point; key=value overrides win over its values")
    p.add_argument("--dry-run", action="store_true",
                   help="list the trials, their teacher keys and what the signal store and sweep directory already "
                        "hold; train nothing")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep in its directory: runs that finished are kept, the rest run "
                        "(again); the same command line as the first time")
    p.add_argument("--keep", default="all",
                   help="model artifacts kept: all (default: every trial's students) or best:K (the K trials with "
                        "the best distilled test AUC; the others' models are deleted at the end)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base config")


def base_overrides(config: str | None, overrides: list[str], smoke: bool) -> list[str]:
    """The overrides every trial starts from: with ``smoke``, the smoke test's, then the
    user's (theirs win). The smoke values are sized from the config as the user's overrides
    leave it, or from the file alone when those are valid only once shrunk: under a file's
    ``stream.batch_windows=6``, ``stream.windows=3`` is refused until the smoke test's
    ``batch_windows=2`` applies."""
    from recdistill.config import ConfigError, load_config
    from recdistill.smoke import smoke_overrides

    if not smoke:
        return list(overrides)
    try:
        base = load_config(config, overrides)
    except ConfigError:
        base = load_config(config, [])
    return smoke_overrides(base) + list(overrides)


def sweep_command(a: argparse.Namespace) -> dict[str, Any]:
    from recdistill.sweep.runner import run_sweep
    from recdistill.sweep.space import check_space, load_space

    space = load_space(a.space)
    overrides = base_overrides(a.config, a.overrides, a.smoke_test)
    n = check_space(space, a.config, overrides)
    print(f"[sweep] {space.name}: {n} trials; {space.doc.splitlines()[0] if space.doc else ''}", flush=True)
    out = Path(a.out) if a.out else Path("runs") / "sweeps" / (
        f"{Path(a.config).stem}-{space.name.replace(':', '-')}{'-smoke' if a.smoke_test else ''}")
    samples = min(a.num_samples or space.num_samples, 2) if a.smoke_test else a.num_samples
    return run_sweep(a.config, overrides, space, out, num_samples=samples,
                     max_concurrent=a.max_concurrent, pack=a.pack, dry_run=a.dry_run, resume=a.resume,
                     keep=a.keep)
