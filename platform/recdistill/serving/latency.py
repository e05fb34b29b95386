"""Serving cost: latency and throughput per batch size, parameter counts, file sizes.

A short, warmed-up benchmark, not a load test: one caller, one batch at a time, so p50/p99
are per-request compute latency on the given thread count, without queueing.
"""

from __future__ import annotations

from pathlib import Path
from time import perf_counter_ns
from typing import Any, Callable, Sequence

import numpy as np
import torch

from recdistill.models import Ranker
from recdistill.serving.export import MainTower, Scorer

# fewer timed calls than this make p99 the maximum of a handful of samples
MIN_ITERS = 20


def measure(fn: Scorer, make_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
            batch_sizes: Sequence[int] = (1, 512), warmup: int = 20, iters: int = 200, threads: int = 1,
            max_seconds: float = 5.0, device: torch.device | str | None = None) -> dict[str, Any]:
    """Time ``fn(*make_batch(b))`` for each batch size ``b``.

    Per batch size: ``warmup`` untimed calls, then up to ``iters`` timed ones, stopping once
    ``max_seconds`` have passed but after at least ``MIN_ITERS`` (or ``iters`` if fewer).
    Runs under ``torch.no_grad()`` with ``torch.set_num_threads(threads)``, restored after.
    ``device`` (default CPU) is where batches are put; on CUDA the clock is read after a
    synchronize, so a time covers the kernels and not only their launch.
    """
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers; got {tuple(batch_sizes)}")
    if warmup < 0 or iters < 1 or threads < 1 or max_seconds <= 0:
        raise ValueError(f"need warmup >= 0, iters >= 1, threads >= 1, max_seconds > 0; got warmup={warmup}, "
                         f"iters={iters}, threads={threads}, max_seconds={max_seconds}")
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={dev} requested but CUDA is not available")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            results = {str(int(b)): _time(fn, tuple(t.to(dev) for t in make_batch(int(b))), int(b),
                                          warmup, iters, max_seconds, sync) for b in batch_sizes}
    finally:
        torch.set_num_threads(previous)
    return {"threads": threads, "device": str(dev), "batch": results}


def _time(fn: Scorer, batch: tuple[torch.Tensor, ...], rows: int, warmup: int, iters: int,
          max_seconds: float, sync: Callable[[], None]) -> dict[str, float | int]:
    for _ in range(warmup):
        fn(*batch)
    budget_ns = int(max_seconds * 1e9)
    at_least = min(MIN_ITERS, iters)
    times_ns: list[int] = []
    sync()
    start = perf_counter_ns()
    while len(times_ns) < iters:
        sync()
        t0 = perf_counter_ns()
        fn(*batch)
        sync()
        t1 = perf_counter_ns()
        times_ns.append(t1 - t0)
        if len(times_ns) >= at_least and t1 - start >= budget_ns:
            break
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    # a perf_counter tick can exceed a tiny call: clamp so throughput stays finite
    mean_s = max(float(ms.mean()) / 1e3, 1e-9)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": mean_s * 1e3, "rows_per_s": rows / mean_s, "iters": len(times_ns)}


def param_counts(model: Ranker) -> dict[str, int]:
    """Parameters on the serving path (features, backbone, main head; not the aux tower)."""
    embedding = dense = 0
    for name, p in MainTower(model).named_parameters():
        if name.startswith("features.table"):
            embedding += p.numel()
        else:
            dense += p.numel()
    return {"dense": dense, "embedding": embedding, "total": dense + embedding}


def file_bytes(path: Path) -> int:
    """Size of a file, or the total of every file under a directory (e.g. .onnx + .onnx.data)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    raise FileNotFoundError(f"nothing at {path}")
