"""Store or recompute a committee expert's states? Both measured in one process.

    .venv/bin/python benchmarks/bench_committee.py [--rows 65536] [--batch 512]

An expert of the demo student's shape (dcnv2, embed 8, depth 1, width 32) on the synthetic
log's features (26 fields + user + item, a 10-item history, 13 dense). Per row, a committee
member needs the expert's logit, its field tokens and its backbone output:
- recompute: the frozen expert's forward pass on the student's batch, in the student worker
  (``train.committee``);
- store: the same states written once per row as Parquet (a fixed-size float list column
  beside the row id, as the teacher's logits are), then read back and decoded to tensors, as
  a join would (the join itself, by row id, comes on top: ``bench_representations`` has it).
Printed: bytes per row stored, seconds per million rows of each, and the ratio of each to
the student's own training step on the same rows (the baseline every committee member pays).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from bench_data import _best  # the scripts' shared timer (best of n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=65_536)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from recdistill.data.tensors import TensorLog
    from recdistill.distill.objective import Objective
    from recdistill.models import FeatureSpec, Ranker
    from recdistill.train.loop import optimizers, train_step

    torch.set_num_threads(1)  # a student worker's share of a 2-core node
    spec = FeatureSpec(buckets=(1000,) * 28, num_dense=13, sequence_fields=(27,))
    g = torch.Generator().manual_seed(0)
    n = args.rows
    rows = TensorLog(cat=torch.randint(0, 1000, (n, 28), generator=g), dense=torch.randn(n, 13, generator=g),
                     seq=torch.randint(0, 1000, (n, 1, 10), generator=g), label=(torch.rand(n, generator=g) < 0.25).float(),
                     sample_rate=torch.ones(n), row_id=torch.arange(n))
    expert, student = (Ranker(spec, "dcnv2", 8, 1, 32) for _ in range(2))
    expert.eval().requires_grad_(False)
    opts = optimizers(student, 1e-3, 1e-3)
    obj = Objective(alpha=1.0)
    zt = torch.randn(n)
    batches = [(s, min(s + args.batch, n)) for s in range(0, n, args.batch)]

    def student_steps() -> None:
        for a, b in batches:
            train_step(student, opts, rows.take(slice(a, b)), objective=obj, teacher_logits=zt[a:b])

    states: list[torch.Tensor] = []

    def recompute() -> None:
        states.clear()
        with torch.no_grad():
            for a, b in batches:
                x = rows.take(slice(a, b))
                tokens, hidden, z = expert.states(x.cat, x.dense, x.seq)
                states.append(torch.cat([tokens.flatten(1), hidden, z.unsqueeze(1)], 1))

    recompute()
    width = states[0].shape[1]
    flat = torch.cat(states).numpy()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "states.parquet"
        pq.write_table(pa.table({"row_id": pa.array(np.arange(n, dtype=np.int64)),
                                 "states": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), width)}), path)
        stored = path.stat().st_size

        def read_back() -> None:
            t = pq.read_table(path)
            col = t.column("states").combine_chunks()
            torch.from_numpy(col.values.to_numpy().reshape(-1, width))

        t_student = _best(student_steps, args.repeats)
        t_recompute = _best(recompute, args.repeats)
        t_read = _best(read_back, args.repeats)
    per_m = 1e6 / n
    out = {"rows": n, "state_floats_per_row": width, "stored_bytes_per_row": stored / n,
           "logit_bytes_per_row": 12, "student_step_s_per_M": t_student * per_m,
           "recompute_s_per_M": t_recompute * per_m, "read_stored_s_per_M": t_read * per_m,
           "recompute_vs_student_step": t_recompute / t_student, "read_vs_student_step": t_read / t_student}
    print(json.dumps(out, indent=2))
    print(f"\nstates: {width} floats per row = {stored / n:,.0f} B/row stored (a logit: ~12 B/row with its row id); "
          f"recompute {out['recompute_vs_student_step']:.2f}× a student step, read-back alone "
          f"{out['read_vs_student_step']:.2f}× (the join by row id and the teacher's writing pass come on top)")


if __name__ == "__main__":
    main()
