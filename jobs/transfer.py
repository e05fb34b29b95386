"""Cross-architecture transfer (CrossAdapt's offline stage), as a Ray job.

The teacher plays the OLD production model; students[0] is the NEW architecture (it may
have wider embeddings than the teacher). The teacher's embedding tables are projected
into the student's (PCA to shrink, an orthonormal QR map to grow, per field), then the
student trains progressively: dense layers first with the embeddings frozen, then all
jointly. Next to it: the same student from scratch, and end to end right after
projection. Results: runs/<name>/results.json (learning curves, speed-up to the scratch
student's AUC, projection errors per field), report.md/html and curves.png.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/transfer.py --config jobs/configs/transfer_demo.yaml run.dir=/mnt/shared/runs/transfer

    python jobs/transfer.py --config jobs/configs/transfer_demo.yaml transfer.augment.ratio=0
    python jobs/transfer.py --config jobs/configs/transfer_demo.yaml --compare-sampling random,biased,temporal

    --smoke-test   the same experiment shrunk to a minute or two (tiny log, small models)
"""

from __future__ import annotations

import argparse
import sys

from recdistill.config import ConfigError, load_config
from recdistill.run_dir import OVERWRITE_HELP
from recdistill.smoke import smoke_test
from recdistill.transfer.compare import STRATEGIES, compare_sampling
from recdistill.transfer.pipeline import run_transfer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML, e.g. jobs/configs/transfer_demo.yaml")
    p.add_argument("--smoke-test", action="store_true", help="tiny log, small models")
    p.add_argument("--compare-sampling", metavar="S1,S2,...", nargs="?", const=",".join(STRATEGIES),
                   help="instead of the variants: the progressive student once per sampling strategy at "
                        f"transfer.sampling.budget, one table (default: {','.join(STRATEGIES)})")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. transfer.augment.ratio=0.5")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, ["transfer.enabled=true", *args.overrides,
                                        *(["run.overwrite=true"] if args.overwrite else [])])
        cfg = smoke_test(cfg) if args.smoke_test else cfg
        if args.compare_sampling:
            compare_sampling(cfg, [s for s in args.compare_sampling.split(",") if s])
        else:
            run_transfer(cfg)
    except ConfigError as e:
        print(f"transfer.py: config error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
