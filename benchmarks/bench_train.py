"""Training-loop overheads, each next to a baseline run in the same process.

    .venv/bin/python benchmarks/bench_train.py [--rows 200000] [--repeats 3]

1. Student training samples/s through ``train.loop.fit`` (decoupled towers, distillation
   objective) vs a minimal inline PyTorch loop doing the same forward, loss, backward and
   optimizer steps on the same model and tensors (target ratio ≥ 0.9).
2. The teacher's forward-distillation recording: ``fit(record=True)`` vs ``record=False``
   (target overhead ≤ 5 % of its step time).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recdistill.data.tensors import TensorLog
from recdistill.distill.objective import Objective
from recdistill.models import FeatureSpec, Ranker
from recdistill.train.loop import fit, optimizers

BUCKETS = tuple(int(x) + 2 for x in np.geomspace(10, 1e6, 26).round()) + (100_002, 50_002)
SPEC = FeatureSpec(BUCKETS, 13, (27,))


def make_data(n: int) -> TensorLog:
    g = torch.Generator().manual_seed(0)
    return TensorLog(cat=torch.stack([torch.randint(0, b, (n,), generator=g) for b in BUCKETS], 1),
                     dense=torch.randn(n, 13, generator=g), seq=torch.randint(0, 50_000, (n, 1, 10), generator=g),
                     label=(torch.rand(n, generator=g) < 0.25).float(), sample_rate=torch.ones(n),
                     row_id=torch.arange(n))


def inline_loop(model: Ranker, d: TensorLog, zt: torch.Tensor, obj: Objective, bs: int) -> float:
    opts = optimizers(model, 1e-3, 1e-2)
    t = time.perf_counter()
    for s in range(0, len(d), bs):
        main, aux = model(d.cat[s:s + bs], d.dense[s:s + bs], d.seq[s:s + bs])
        loss = obj(main, aux, True, d.label[s:s + bs], zt[s:s + bs])["total"]
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    d = make_data(args.rows)
    zt = torch.randn(args.rows)
    obj = Objective(alpha=1.0)
    cpu = torch.device("cpu")
    ours, base, rec_on, rec_off = [], [], [], []
    for _ in range(args.repeats):
        torch.manual_seed(0)
        base.append(inline_loop(Ranker(SPEC, "dcnv2", 8, 1, 32, "decoupled"), d, zt, obj, 2048))
        torch.manual_seed(0)
        stats, _ = fit(Ranker(SPEC, "dcnv2", 8, 1, 32, "decoupled"), d, epochs=1, batch_size=2048, lr=1e-3,
                       embedding_lr=1e-2, device=cpu, objective=obj, teacher_logits=zt)
        ours.append(stats.seconds)
        for record, out in ((False, rec_off), (True, rec_on)):
            torch.manual_seed(0)
            stats, _ = fit(Ranker(SPEC, "dcnv2", 16, 3, 256), d, epochs=1, batch_size=4096, lr=1e-3,
                           embedding_lr=1e-2, device=cpu, record=record)
            out.append(stats.seconds)
    n = args.rows
    print(f"student (dcnv2 8/1/32, decoupled, distill)  fit {n / min(ours):,.0f} samples/s   inline loop "
          f"{n / min(base):,.0f} samples/s   ratio fit/inline = {min(base) / min(ours):.3f}")
    print(f"teacher (dcnv2 16/3/256)  record off {n / min(rec_off):,.0f} samples/s   record on "
          f"{n / min(rec_on):,.0f} samples/s   recording overhead = {min(rec_on) / min(rec_off) - 1:+.1%}")


if __name__ == "__main__":
    main()
