"""A Ray Tune sweep over one search space, with every distinct teacher trained once.

    python jobs/sweep.py --space search_spaces/alpha_width.py --config jobs/configs/sweep_demo.yaml
    python jobs/sweep.py --space search_spaces/tau.py --config jobs/configs/online_demo.yaml --smoke-test

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/sweep.py --space search_spaces/full.py --config jobs/configs/demo.yaml \\
        --num-samples 50 platform.signal_store=s3://BUCKET/recdistill/signals

Trials are grouped by teacher key; the first trial of each group trains (or finds) its
teacher, Tune runs the rest reading the stored signals (0 teacher steps). Re-running a
sweep reuses every stored teacher. Writes <out>/results.json (teachers_trained,
teachers_reused, trials[i].{config, auc, auc_raw, eta, params, teacher_key}), report.md,
report.html, plots, and one W&B run per trial (offline unless WANDB_API_KEY is set).
"""

from __future__ import annotations

import argparse
import sys

from recdistill.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    from recdistill.run_dir import SWEEP_OVERWRITE_HELP
    from recdistill.sweep.cli import add_sweep_args, sweep_command

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_args(p)
    p.add_argument("--overwrite", action="store_true", help=SWEEP_OVERWRITE_HELP)
    args = p.parse_args(argv)
    if args.overwrite:
        args.overrides = [*args.overrides, "run.overwrite=true"]
    try:
        sweep_command(args)
    except ConfigError as e:
        print(f"sweep.py: config error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
