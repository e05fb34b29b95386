"""One teacher → N students distillation experiment, as a Ray job.

On a cluster (from the repository root, with the cluster's dashboard reachable, e.g.
after `ray dashboard cluster.yaml`):

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/distill.py --config jobs/configs/demo.yaml \\
        platform.signal_store=s3://BUCKET/recdistill/signals run.dir=/mnt/shared/runs/demo

`ray.init()` joins the cluster the job runs in (RAY_ADDRESS is set for a submitted job)
and starts a local Ray otherwise, so `python jobs/distill.py --config ...` also runs on a
laptop. Point `platform.signal_store` and `run.dir` at storage every node sees (a
pyarrow URI or a shared mount): the job's working directory is a temporary copy.

    --smoke-test   the same experiment shrunk to about a minute (tiny log, small models)
"""

from __future__ import annotations

import argparse
import sys

from recdistill.config import ConfigError, load_config, smoke_test
from recdistill.experiment import run_experiment


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML, e.g. jobs/configs/demo.yaml")
    p.add_argument("--smoke-test", action="store_true", help="tiny log, small models, one pass")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. students.0.alpha=2")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"distill.py: config error: {e}", file=sys.stderr)
        return 2
    run_experiment(smoke_test(cfg) if args.smoke_test else cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
