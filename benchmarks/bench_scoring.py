"""The test split's scoring cost outside the models' forward passes, next to a baseline in
the same process.

    .venv/bin/python benchmarks/bench_scoring.py [--rows 1000000] [--models 4,64] [--repeats 2]

Every model's logits on the same rows go through an ``Evaluator`` with ``run.bootstrap``
replicates, as a student group's test scoring does (one draw of the Poisson weights per
batch of row ids, shared by every model). The baseline sums each model's bootstrap
histograms with the flat ``np.bincount`` over (replicates × rows) that
``metrics.BootstrapAUC`` used before 2026-12-05; the current code sums the rows' weights per
bin as a sparse one-hot product over weights laid out once per batch
(``metrics.ResampleRows``). Both give the same histograms (checked here); the figures are
seconds of evaluator updates and their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recdistill.metrics import BootstrapAUC, poisson_weights
from recdistill.train.evaluate import Evaluator

BATCH = 16384  # the test split's batch (``train.worker.score_test``)


class FlatBincountAUC(BootstrapAUC):
    """The histograms summed as before 2026-12-05 (the baseline), the Poisson weights drawn
    once per batch of row ids as the evaluator drew them then."""

    _drawn: tuple[np.ndarray, np.ndarray] | None = None  # the last batch's row ids and weights, for every model

    def update(self, labels, probs, row_ids, weights=None) -> None:  # type: ignore[override]
        if FlatBincountAUC._drawn is None or FlatBincountAUC._drawn[0] is not row_ids:
            FlatBincountAUC._drawn = (row_ids, poisson_weights(row_ids, self.replicates))
        y = np.asarray(labels).astype(bool).ravel()
        p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), 1e-12, 1 - 1e-12)
        z = np.log(p) - np.log1p(-p)
        idx = np.clip(((z - self.LO) / (self.HI - self.LO) * self.bins).astype(np.int64), 0, self.bins - 1)
        w = np.vstack([FlatBincountAUC._drawn[1], np.ones((1, y.size), np.float32)])
        flat = (np.arange(self.replicates + 1)[:, None] * self.bins + idx[None, :]).ravel()
        size = (self.replicates + 1) * self.bins
        for k, mask in ((0, y), (1, ~y)):
            self.hist[k] += np.bincount(flat, weights=(w * mask[None, :]).ravel(), minlength=size).reshape(
                self.replicates + 1, self.bins)


def score(models: int, rows: int, replicates: int, baseline: bool) -> tuple[float, Evaluator]:
    names = [f"m{i}" for i in range(models)]
    ev = Evaluator(names, {}, replicates=replicates)
    if baseline:  # the old evaluator: the batch's ids on the host once, no layout of their weights
        ev.boot = {n: FlatBincountAUC(replicates) for n in names}
        host: list = [None, None]

        def ids_only(row_ids: torch.Tensor, labels: np.ndarray, replicates: int) -> tuple[np.ndarray, None]:
            if host[0] is not row_ids:
                host[:] = [row_ids, row_ids.numpy()]
            return host[1], None

        ev._weights = ids_only  # type: ignore[method-assign]
    g = torch.Generator().manual_seed(0)
    seconds = 0.0
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        ids, y = torch.arange(start, start + n), (torch.rand(n, generator=g) < 0.1).float()
        logits = [torch.randn(n, generator=g) + y for _ in names]
        t = time.perf_counter()
        for name, z in zip(names, logits):
            ev.update(name, z, y, ids)
        seconds += time.perf_counter() - t
    return seconds, ev


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--models", default="4,64", help="comma-separated model counts")
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print("| models | rows | baseline s | now s | now / baseline |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for m in (int(x) for x in args.models.split(",")):
        rows = args.rows if m <= 8 else max(BATCH, args.rows // 16)  # many models: fewer rows, same batches
        base = now = 0.0
        for _ in range(args.repeats):  # alternating, so drift hits both
            b, ev_b = score(m, rows, args.replicates, True)
            n, ev_n = score(m, rows, args.replicates, False)
            base, now = base + b, now + n
        for name in ev_n.names:
            if not np.array_equal(ev_b.boot[name].hist, ev_n.boot[name].hist):
                raise SystemExit(f"{name}: histograms differ from the baseline's")
        print(f"| {m} | {rows:,} | {base / args.repeats:.2f} | {now / args.repeats:.2f} | {now / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
