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
Then one training step per variant of ``students.N.distill_from`` with 4 experts (expert
alone, average, committee, filtered) against the plain distilled step, on the same batches.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
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
    # the read-back wraps Arrow's buffer without a copy, read-only, as a join would
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
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
    out_variants = variant_steps(rows, batches, spec, t_student)
    out = {"rows": n, "state_floats_per_row": width, "stored_bytes_per_row": stored / n,
           "logit_bytes_per_row": 12, "student_step_s_per_M": t_student * per_m,
           "recompute_s_per_M": t_recompute * per_m, "read_stored_s_per_M": t_read * per_m,
           "recompute_vs_student_step": t_recompute / t_student, "read_vs_student_step": t_read / t_student}
    out["variant_step_vs_plain"] = out_variants
    print(json.dumps(out, indent=2))
    print(f"\nstates: {width} floats per row = {stored / n:,.0f} B/row stored (a logit: ~12 B/row with its row id); "
          f"recompute {out['recompute_vs_student_step']:.2f}× a student step, read-back alone "
          f"{out['read_vs_student_step']:.2f}× (the join by row id and the teacher's writing pass come on top)")


def variant_steps(rows, batches, spec, t_plain: float, experts: int = 4) -> dict[str, float]:
    """Each committee variant's training pass over ``batches`` against the plain one's."""
    from recdistill.config import load_config
    from recdistill.distill.objective import Objective
    from recdistill.models import Ranker
    from recdistill.train.committee import Committee, committee_module
    from recdistill.train.group import Member
    from recdistill.train.loop import optimizers

    frozen = [Ranker(spec, "dcnv2", 8, 1, 32) for _ in range(experts)]
    committee = Committee(frozen, torch.device("cpu"))
    cfg = load_config(None, [f"committee.experts={experts}"])
    zt = torch.randn(len(rows))
    out = {}
    for source, expert, threshold in (("expert", 0, 0.0), ("average", -1, 0.0), ("committee", -1, 0.0),
                                      ("filtered", -1, cfg.committee.threshold)):
        m = Member(name=source, model=Ranker(spec, "dcnv2", 8, 1, 32), objective=Objective(alpha=4.0),
                   uses_teacher=True, ratio=1.0, negative_keep=1.0, seed=1, batch_size=512, epochs=1, lr=1e-2,
                   embedding_lr=1e-3, source=source, expert=expert, threshold=threshold, align_weight=1.0)
        if source in ("committee", "filtered"):
            m.qa = committee_module(cfg, m.model, frozen)
        m.opts = optimizers(m.model, 1e-2, 1e-3) + ([torch.optim.Adam(m.qa.parameters(), lr=1e-2)] if m.qa else [])

        def one_pass() -> None:
            for a, b in batches:
                committee.step(m, rows.take(slice(a, b)), zt[a:b], None)

        out[source] = _best(one_pass, 1) / t_plain
    return out


if __name__ == "__main__":
    main()
