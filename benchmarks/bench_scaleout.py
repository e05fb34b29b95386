"""The same 1→N job on one Ray node and on a two-node local cluster: wall, and whether every
metric is the same.

    .venv/bin/python benchmarks/bench_scaleout.py [--rows 200000] [--config jobs/configs/demo.yaml]
        [--out .tmp/bench_scaleout] [overrides ...]

The synthetic log is written once (not timed). Then ``recdistill run`` runs twice in a fresh
process each, teacher trained afresh each time: on a local one-node Ray of all this
machine's CPUs, then joined (``RAY_ADDRESS``) to a ``ray.cluster_utils.Cluster`` of two
nodes that split those CPUs (peak PSS: this process's whole tree, the cluster's nodes
included, in both). Both runs get ``platform.students_per_group=1`` (each student a
Train run of its own, so the groups can land on different nodes) and
``platform.cpus_per_worker=0.5`` (a node of one CPU keeps half of it for Ray Data: a Train
worker that takes a node's last CPU starves its reader). Each run's results say on how many
nodes its student groups' workers ran (``platform.student_nodes``).

On one machine the two-node cluster only shares the same cores, so its wall says what the
cluster layer costs, not what a second machine gains; what it shows is that the job's
reads, Train runs and signal store work across nodes and give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_growth import measured_run, synth  # noqa: E402

FIXED = ["platform.students_per_group=1", "platform.cpus_per_worker=0.5"]


def metrics(r: dict[str, Any]) -> dict[str, float]:
    """Every model's test AUC and LogLoss in a run's results."""
    out = {"teacher/auc": r["teacher"]["auc"], "teacher/logloss": r["teacher"]["logloss"]}
    for s in r["students"]:
        for kind in ("raw", "distill"):
            out[f"{s['name']}/{kind}/auc"] = s[f"auc_{kind}"]
            out[f"{s['name']}/{kind}/logloss"] = s[f"logloss_{kind}"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--config", default="jobs/configs/demo.yaml")
    p.add_argument("--out", type=Path, default=Path(".tmp/bench_scaleout"))
    p.add_argument("overrides", nargs="*", help="dotted overrides for both runs, e.g. teacher.epochs=1")
    args = p.parse_args()
    args.overrides = [*FIXED, *args.overrides]
    exe = str(Path(sys.executable).with_name("recdistill"))
    data = args.out / f"data-{args.rows}"
    synth(exe, args, args.rows, data)
    cpus = os.cpu_count() or 2
    runs: dict[str, dict[str, Any]] = {}

    print(f"[1 node, {cpus} CPUs] recdistill run …", flush=True)
    os.environ.pop("RAY_ADDRESS", None)
    wall, pss, r = measured_run(exe, args, args.config, args.rows, data, args.out / "one-node",
                                args.out / "one-node.log", whole_tree=True)
    runs["1 node"] = {"wall_s": wall, "peak_pss_gib": pss / 2 ** 30, "metrics": metrics(r),
                      "student_nodes": r["platform"]["student_nodes"]}

    from ray.cluster_utils import Cluster

    half = max(1, cpus // 2)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": half})
    cluster.add_node(num_cpus=max(1, cpus - half))
    cluster.wait_for_nodes()
    try:
        os.environ["RAY_ADDRESS"] = cluster.address
        print(f"[2 nodes, {half} + {max(1, cpus - half)} CPUs] recdistill run …", flush=True)
        wall, pss, r = measured_run(exe, args, args.config, args.rows, data, args.out / "two-nodes",
                                    args.out / "two-nodes.log", whole_tree=True)
        runs["2 nodes"] = {"wall_s": wall, "peak_pss_gib": pss / 2 ** 30, "metrics": metrics(r),
                           "student_nodes": r["platform"]["student_nodes"]}
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        cluster.shutdown()

    a, b = runs["1 node"]["metrics"], runs["2 nodes"]["metrics"]
    diff = max(abs(a[k] - b[k]) for k in a)
    print("\n| layout | wall s | peak PSS GiB | nodes the student groups ran on | teacher AUC | "
          "largest metric difference to 1 node |")
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        d = max(abs(r["metrics"][k] - a[k]) for k in a)
        print(f"| {name} | {r['wall_s']:.0f} | {r['peak_pss_gib']:.2f} | {r['student_nodes']} | "
              f"{r['metrics']['teacher/auc']:.4f} | {d:.2e} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaleout.json").write_text(json.dumps({"runs": runs, "max_metric_difference": diff}, indent=1))
    print(f"\nfigures: {args.out / 'scaleout.json'}")


if __name__ == "__main__":
    main()
