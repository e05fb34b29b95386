"""Ablations of the online pipeline, each a set of online runs over one shared window spool.

    python jobs/online_ablation.py                       # all four, on jobs/configs/online_demo.yaml
    python jobs/online_ablation.py --only tau --taus 1,10,inf
    python jobs/online_ablation.py --smoke-test          # the same, shrunk to minutes

- tau:     the teacher update interval τ over {1, 5, 10, 50, ∞}: AUC and its stability
           (std over windows, worst window-to-window drop) for the teacher and the students;
- drift:   streaming distillation vs a student distilled in the batch phase only (labels
           after), on the last windows (Rec-Distill Table 8), read from the config's τ run;
- replay:  adaptive replay vs none on the windows from the first one the detector fires on;
- memory:  peak worker RSS over 5 vs 50 windows of the same size (small models).

Writes <out>/summary.json, <out>/summary.md and <out>/tau.png; every run keeps its own
run directory (results.json, report.md, auc_over_windows.png) under <out>/runs/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recdistill.config import ConfigError
from recdistill.online.ablation import ABLATIONS, markdown, parse_taus, run_ablations


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="jobs/configs/online_demo.yaml")
    p.add_argument("--only", action="append", choices=ABLATIONS, help="run only these ablations (repeatable)")
    p.add_argument("--taus", default="1,5,10,50,inf", help="τ values (inf = frozen teacher)")
    p.add_argument("--memory-windows", default="5,50", help="window counts for the memory check")
    p.add_argument("--memory-rows-per-window", type=int, default=10_000)
    p.add_argument("--out", default="runs/online_ablation")
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="runs under <out>/runs/ that exist already are "
                                                             "deleted and run again (without it they are refused)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    try:
        summary = run_ablations(a.config, a.overrides, Path(a.out), only=a.only or ABLATIONS,
                                taus=parse_taus(a.taus), memory_windows=[int(x) for x in a.memory_windows.split(",")],
                                memory_rows_per_window=a.memory_rows_per_window, smoke=a.smoke_test,
                                overwrite=a.overwrite)
    except ConfigError as e:
        print(f"online_ablation.py: config error: {e}", file=sys.stderr)
        return 2
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
