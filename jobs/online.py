"""Online distillation (batch phase, then the log replayed window by window), as a Ray job.

The teacher keeps learning on every new window (optimizer step every τ batches) and
publishes each window's forward-distillation signals through the hub; the students
follow window by window. A shift detector (Jensen-Shannon divergence) turns on
historical replay. Results: runs/<name>/results.json (per-window metrics, η, lag, shift),
report.md and auc_over_windows.png.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/online.py --config jobs/configs/online_demo.yaml \\
        platform.signal_store=s3://BUCKET/recdistill/signals run.dir=/mnt/shared/runs/online

    python jobs/online.py --config jobs/configs/online_demo.yaml stream.teacher_update_interval=1

    --smoke-test   the same experiment shrunk to a minute or two (tiny log, 5 windows)
"""

from __future__ import annotations

import argparse
import sys

from recdistill.config import ConfigError, load_config
from recdistill.online.pipeline import run_online
from recdistill.run_dir import OVERWRITE_HELP
from recdistill.smoke import smoke_test


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML, e.g. jobs/configs/online_demo.yaml")
    p.add_argument("--smoke-test", action="store_true", help="tiny log, small models, 5 windows")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. stream.teacher_update_interval=5")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, ["stream.enabled=true", *args.overrides,
                                        *(["run.overwrite=true"] if args.overwrite else [])])
        run_online(smoke_test(cfg) if args.smoke_test else cfg)
    except ConfigError as e:
        print(f"online.py: config error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
