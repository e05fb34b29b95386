"""The evaluator's cross-worker reduction: on the device the backend reduces on (NCCL takes
CUDA tensors only, so a CPU tensor there fails with 2+ GPU workers), and over a real
2-process gloo group it equals one evaluator over all the rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recdistill.train.evaluate import Evaluator, collective_device

pytestmark = pytest.mark.timeout(120)


def test_the_reduction_runs_where_the_backend_reduces() -> None:
    assert collective_device("gloo").type == "cpu"
    assert collective_device("nccl").type == "cuda"  # a CPU tensor there is the multi-GPU bug
    assert collective_device("cpu:gloo,cuda:nccl").type == "cpu"  # gloo serves CPU tensors


def _data(seed: int = 3, n: int = 4000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g)
    y = (torch.rand(n, generator=g) < torch.sigmoid(z)).to(torch.int8)
    return z, y, torch.arange(n)


def _worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    reduce, seen = dist.all_reduce, []

    def checked(t: torch.Tensor, *args, **kwargs):  # torch's own collective, its tensor's device noted
        seen.append((t.device.type, collective_device(dist.get_backend()).type))
        return reduce(t, *args, **kwargs)

    dist.all_reduce = checked
    try:
        z, y, ids = _data()
        part = slice(rank, None, world)
        ev = Evaluator(["m"], {"m": 0.5}, replicates=8)
        ev.update("m", z[part], y[part], ids[part])
        ev.all_reduce()  # packs, moves to collective_device("gloo"), reduces, unpacks
        Path(out, f"{rank}.json").write_text(json.dumps({**ev.metrics("m"), "seen": seen}, default=float))
    finally:
        dist.all_reduce = reduce
        dist.destroy_process_group()


def test_two_gloo_workers_reduce_to_what_one_evaluator_sees(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2, join=True)
    z, y, ids = _data()
    one = Evaluator(["m"], {"m": 0.5}, replicates=8)
    one.update("m", z, y, ids)
    want = one.metrics("m")
    for rank in (0, 1):
        got = json.loads(Path(tmp_path, f"{rank}.json").read_text())
        for k in ("auc", "logloss", "calibration", "rows"):
            assert got[k] == pytest.approx(want[k], rel=1e-9), (rank, k)  # sums in another order
        assert np.allclose(got["auc_boot"], want["auc_boot"])
        assert got["seen"] and all(have == need for have, need in got["seen"]), got["seen"]
