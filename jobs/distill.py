"""One teacher → N students distillation experiment, as a Ray job.

On a cluster (from the repository root, with the cluster's dashboard reachable, e.g.
after `ray dashboard cluster.yaml`; cluster.yaml's nodes run with token authentication, and
the client sends the token from ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN):

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/distill.py --config jobs/configs/demo.yaml \\
        platform.signal_store=s3://BUCKET/recdistill/signals run.dir=/mnt/shared/runs/demo

The job joins the cluster it runs in (RAY_ADDRESS, the auth mode and the token come from
its node) and starts a local Ray otherwise, so `python jobs/distill.py --config ...` also
runs on a laptop. Point `platform.signal_store` and `run.dir` at storage every node sees (a
pyarrow URI or a shared mount): the job's working directory is a temporary copy.

    --smoke-test   the same experiment shrunk to about a minute (tiny log, small models)
"""

from __future__ import annotations

import argparse
import sys

from recdistill.config import ConfigError, load_config
from recdistill.experiment import run_experiment
from recdistill.run_dir import OVERWRITE_HELP
from recdistill.smoke import smoke_test


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML, e.g. jobs/configs/demo.yaml")
    p.add_argument("--smoke-test", action="store_true", help="tiny log, small models, one pass")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. students.0.alpha=2")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, [*args.overrides, *(["run.overwrite=true"] if args.overwrite else [])])
    except ConfigError as e:
        print(f"distill.py: config error: {e}", file=sys.stderr)
        return 2
    run_experiment(smoke_test(cfg) if args.smoke_test else cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
