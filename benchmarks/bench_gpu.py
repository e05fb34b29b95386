"""Throughput on the device the run picks (CUDA when visible, else CPU), each figure next
to a baseline run in the same process:

1. A DCNv2 student (distilled, decoupled towers) through the platform's student path
   (``train.group.StudentGroup`` fed CPU stream batches, as a Ray Train worker feeds it)
   vs an inline PyTorch loop on the same model and tensors, already on the device.
   Goal on one current GPU: >= 1M samples/s for the platform path (TorchRec's DLRM: ~740k
   on one A100).
2. Teachers through ``train.loop.fit`` with forward-distillation recording: DCNv2 and
   TokenMixer, samples/s.
3. GPU speed options on the inline loop, each against the plain loop, so none becomes a
   default before it is measured: bf16 autocast, pinned memory with non_blocking copies
   (rows streamed from the host), and ``torch.compile`` of the model step (``--compile``).

    .venv/bin/python benchmarks/bench_gpu.py [--rows 2000000] [--batch 8192] [--compile]
    .venv/bin/python benchmarks/bench_gpu.py --smoke     # tiny, any device: the suite runs it
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Any, Callable

import numpy as np
import torch

from recdistill.data.tensors import TensorLog
from recdistill.distill.objective import Objective
from recdistill.models import FeatureSpec, Ranker
from recdistill.train.group import Member, StudentGroup
from recdistill.train.loop import fit, optimizers, pick_device

# a Criteo-like layout: 26 fields from 10 to 1M ids, 13 dense features
BUCKETS = tuple(int(x) + 2 for x in np.geomspace(10, 1e6, 26).round())
SPEC = FeatureSpec(BUCKETS, 13)


def make_data(n: int) -> TensorLog:
    g = torch.Generator().manual_seed(0)
    return TensorLog(cat=torch.stack([torch.randint(0, b, (n,), generator=g) for b in BUCKETS], 1),
                     dense=torch.randn(n, 13, generator=g), seq=torch.zeros(n, 0, 1, dtype=torch.long),
                     label=(torch.rand(n, generator=g) < 0.25).float(), sample_rate=torch.ones(n),
                     row_id=torch.arange(n))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def student() -> Ranker:
    torch.manual_seed(0)
    return Ranker(SPEC, "dcnv2", 8, 2, 64, "decoupled", tower_width=32)


def inline(d: TensorLog, zt: torch.Tensor, bs: int, device: torch.device, *, amp: bool = False,
           stream_from_host: bool = False, pin: bool = False, compiled: bool = False) -> float:
    """Seconds for one pass of the plain loop (the baseline): forward, objective, backward,
    both optimizers. ``stream_from_host``: batches copied from host memory each step (pinned
    and non_blocking with ``pin``) instead of living on the device."""
    model = student().to(device)
    obj = Objective(alpha=4.0)
    opts = optimizers(model, 1e-3, 1e-2)
    if stream_from_host:
        src = TensorLog(**{k: (v.pin_memory() if pin and v is not None and device.type == "cuda" else v)
                           for k, v in vars(d).items()})
        zsrc = zt.pin_memory() if pin and device.type == "cuda" else zt
    else:
        src, zsrc = d.to(device), zt.to(device)
    if compiled:
        # the dense part only: Inductor cannot compile the backward of a sparse embedding
        # ("Cannot access storage of SparseTensorImpl"); compiled in place, keys unchanged
        model.backbone.compile()
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    sync(device)
    t = time.perf_counter()
    for s in range(0, len(d), bs):
        cat, dense, seq = (x[s:s + bs].to(device, non_blocking=pin) for x in (src.cat, src.dense, src.seq))
        y, z = src.label[s:s + bs].to(device, non_blocking=pin), zsrc[s:s + bs].to(device, non_blocking=pin)
        with ctx():
            main, aux = model(cat, dense, seq)
            loss = obj(main.float(), aux.float(), True, y, z)["total"]
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - t


def platform_path(d: TensorLog, zt: torch.Tensor, bs: int, device: torch.device, stream_batch: int) -> float:
    """Seconds for one pass of the distilled student through ``StudentGroup``: CPU stream
    batches in, its sample mask, re-batching and the step on ``device``."""
    m = Member(name="s/distill", model=student(), objective=Objective(alpha=4.0), uses_teacher=True, ratio=1.0,
               negative_keep=1.0, seed=1, batch_size=bs, epochs=1, lr=1e-3, embedding_lr=1e-2)
    group = StudentGroup([m], device)
    sync(device)
    t = time.perf_counter()
    for s in range(0, len(d), stream_batch):
        group.feed(d.take(slice(s, s + stream_batch)), zt[s:s + stream_batch], 0)
    group.end_epoch(0)
    sync(device)
    return time.perf_counter() - t


def teacher_rate(arch: str, d: TensorLog, bs: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = Ranker(SPEC, arch, 16, 3, 256)
    stats, _ = fit(model, d, epochs=1, batch_size=bs, lr=1e-3, embedding_lr=1e-2, device=device, record=True)
    return stats.samples_per_s


def best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000, help="rows per pass (default 2M)")
    p.add_argument("--batch", type=int, default=8192, help="student batch size (default 8192)")
    p.add_argument("--repeats", type=int, default=3, help="passes per figure; the fastest counts")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the model step")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the wiring on any device")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.smoke:
        args.rows, args.batch, args.repeats = 20_000, 2048, 1
    device = pick_device("auto")
    d, zt = make_data(args.rows), torch.randn(args.rows)
    n = args.rows
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"[bench_gpu] device {name}, {n:,} rows, student batch {args.batch}, best of {args.repeats}", flush=True)
    inline(d.take(slice(0, min(n, 4 * args.batch))), zt[:4 * args.batch], args.batch, device)  # warm-up
    base = best(lambda: inline(d, zt, args.batch, device), args.repeats)
    ours = best(lambda: platform_path(d, zt, args.batch, device, stream_batch=max(args.batch, 65_536)),
                args.repeats)
    out: dict[str, Any] = {"device": name, "rows": n, "batch": args.batch,
                           "inline_samples_per_s": n / base, "platform_samples_per_s": n / ours,
                           "platform_vs_inline": base / ours}
    print(f"student dcnv2 8/2/64 decoupled, distill: platform {n / ours:,.0f} samples/s, inline loop "
          f"{n / base:,.0f} samples/s, ratio {base / ours:.3f}", flush=True)
    options = {"bf16 autocast": dict(amp=True), "from host, pageable": dict(stream_from_host=True),
               "from host, pinned + non_blocking": dict(stream_from_host=True, pin=True)}
    if args.compile:
        options["torch.compile"] = dict(compiled=True)
    for label, kw in options.items():
        if device.type != "cuda" and (kw.get("pin") or kw.get("amp")):
            continue  # CPU: nothing to pin; bf16 autocast on CPU is not a speed option here
        try:
            if kw.get("compiled"):  # compiled outside the timer, the last partial batch's shape too
                warm = min(n, 2 * args.batch + n % args.batch)
                inline(d.take(slice(0, warm)), zt[:warm], args.batch, device, **kw)
            secs = best(lambda: inline(d, zt, args.batch, device, **kw), args.repeats)
        except Exception as e:  # an option that fails on this device is a finding, not the end of the check
            out[f"inline_{label}_error"] = f"{type(e).__name__}: {e}"[:500]
            print(f"  inline, {label}: failed, {type(e).__name__}: {str(e)[:200]}", flush=True)
            continue
        out[f"inline_{label}"] = n / secs
        print(f"  inline, {label}: {n / secs:,.0f} samples/s ({base / secs:.2f}× the plain loop)", flush=True)
    t_bs = 4096 if device.type == "cuda" else 1024
    teach = d.take(slice(0, t_bs)) if args.smoke else d  # a CPU TokenMixer runs a few hundred rows/s
    for arch in ("dcnv2", "tokenmixer"):
        rate = teacher_rate(arch, teach, t_bs, device)
        out[f"teacher_{arch}_samples_per_s"] = rate
        print(f"teacher {arch} 16/3/256, batch {t_bs}, recording: {rate:,.0f} samples/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
