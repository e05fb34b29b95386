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
from pathlib import Path

from recdistill.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, help="search_spaces/FILE.py or FILE.py:NAME")
    p.add_argument("--config", required=True, help="base experiment YAML")
    p.add_argument("--num-samples", type=int, help="draws per grid point (default: the space's NUM_SAMPLES)")
    p.add_argument("--scheduler", choices=["grid", "random", "asha"], help="default: tune.scheduler")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: tune.max_concurrent_trials)")
    p.add_argument("--out", help="sweep directory (default runs/sweeps/<run.name>-<space>)")
    p.add_argument("--smoke-test", action="store_true", help="tiny log and models, at most 2 samples")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base config")
    a = p.parse_args(argv)
    from recdistill.sweep.runner import run_sweep
    from recdistill.sweep.space import check_space, load_space

    try:
        space = load_space(a.space)
        overrides = list(a.overrides)
        if a.smoke_test:
            overrides += SMOKE
        n = check_space(space, a.config, overrides)
        print(f"[sweep] {space.name}: {n} trials; {space.doc.splitlines()[0] if space.doc else ''}")
        base = a.config
        out = Path(a.out) if a.out else Path("runs") / "sweeps" / (
            f"{Path(base).stem}-{space.name.replace(':', '-')}{'-smoke' if a.smoke_test else ''}")
        run_sweep(base, overrides, space, out, num_samples=min(a.num_samples or space.num_samples, 2)
                  if a.smoke_test else a.num_samples, scheduler=a.scheduler, max_concurrent=a.max_concurrent)
    except ConfigError as e:
        print(f"sweep.py: config error: {e}", file=sys.stderr)
        return 2
    return 0


# the overrides behind config.smoke_test, for a sweep whose trials are built from overrides
SMOKE = ["data.rows=20000", "data.days=2", "data.synthetic.num_users=2000", "data.synthetic.max_cardinality=20000",
         "teacher.embed_dim=8", "teacher.depth=1", "teacher.width=32", "teacher.epochs=1",
         "data.synthetic.drift.shift_days=[]", "stream.windows=5", "stream.batch_windows=2", "run.name=sweep-smoke"]


if __name__ == "__main__":
    sys.exit(main())
