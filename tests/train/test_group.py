"""A student group's shared pass equals training each member alone (plain PyTorch, no Ray)."""

from __future__ import annotations

import numpy as np
import torch

from recdistill.data.sampling import model_sample_mask
from recdistill.data.tensors import TensorLog
from recdistill.distill.objective import Objective
from recdistill.models import FeatureSpec, Ranker
from recdistill.train.group import Member, StudentGroup
from recdistill.train.loop import fit

SPEC = FeatureSpec(buckets=(7, 11), num_dense=3)


def _log(n: int) -> TensorLog:
    g = torch.Generator().manual_seed(0)
    return TensorLog(cat=torch.stack([torch.randint(0, 7, (n,), generator=g), torch.randint(0, 11, (n,), generator=g)], 1),
                     dense=torch.randn(n, 3, generator=g), seq=torch.zeros(n, 0, 1, dtype=torch.long),
                     label=(torch.rand(n, generator=g) < 0.3).float(), sample_rate=torch.ones(n),
                     row_id=torch.arange(n) * 3 + 1)


def _model(seed: int, towers: str) -> Ranker:
    torch.manual_seed(seed)
    return Ranker(SPEC, "dcnv2", 4, 1, 8, towers=towers, tower_width=4)


def _member(name: str, seed: int, towers: str, uses_teacher: bool, ratio: float, keep: float, bs: int,
            epochs: int) -> Member:
    return Member(name=name, model=_model(seed, towers), objective=Objective(alpha=2.0 if uses_teacher else 0.0),
                  uses_teacher=uses_teacher, ratio=ratio, negative_keep=keep, seed=seed * 7, batch_size=bs,
                  epochs=epochs, lr=1e-2, embedding_lr=1e-2)


def test_shared_pass_equals_each_member_alone() -> None:
    data = _log(3000)
    zt = torch.randn(3000)
    zt[::5] = float("nan")  # rows without a teacher signal
    specs = [("a/raw", 1, "decoupled", False, 0.6, 1.0, 128, 2), ("a/distill", 1, "decoupled", True, 0.6, 1.0, 128, 2),
             ("b/distill", 2, "single", True, 0.4, 0.5, 96, 1)]
    group = StudentGroup([_member(*s) for s in specs], torch.device("cpu"))
    stream_batch = 250  # not a multiple of any member's batch size: members re-batch
    for epoch in range(group.epochs):
        for s in range(0, len(data), stream_batch):
            group.feed(data.take(slice(s, s + stream_batch)), zt[s:s + stream_batch], epoch)
        group.end_epoch(epoch)
    for spec, m in zip(specs, group.members):
        alone = _member(*spec)
        keep = torch.from_numpy(np.flatnonzero(model_sample_mask(
            data.row_id.numpy(), data.label.numpy(), alone.ratio, alone.negative_keep, alone.seed)))
        stats, _ = fit(alone.model, data.take(keep), epochs=alone.epochs, batch_size=alone.batch_size, lr=1e-2,
                       embedding_lr=1e-2, device=torch.device("cpu"), objective=alone.objective,
                       teacher_logits=zt[keep] if alone.uses_teacher else None)
        assert m.steps == stats.steps and m.rows == stats.rows
        for (k, a), b in zip(m.model.state_dict().items(), alone.model.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6), (m.name, k)
    assert group.members[1].signal_rows < group.members[1].rows  # NaN rows counted as missing


def test_group_state_round_trip() -> None:
    g1 = StudentGroup([_member("x/raw", 3, "decoupled", False, 1.0, 1.0, 64, 1)], torch.device("cpu"))
    data = _log(300)
    g1.feed(data, None, 0)
    g1.end_epoch(0)
    g2 = StudentGroup([_member("x/raw", 9, "decoupled", False, 1.0, 1.0, 64, 1)], torch.device("cpu"))
    g2.load(g1.state())
    for a, b in zip(g1.members[0].model.parameters(), g2.members[0].model.parameters()):
        assert torch.equal(a, b)
    assert g2.members[0].steps == g1.members[0].steps == 5
