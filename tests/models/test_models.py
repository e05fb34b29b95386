import pytest
import torch

from recdistill.models import FeatureSpec, Ranker
from recdistill.models.backbones import BACKBONES

SPEC = FeatureSpec(buckets=(5, 7, 11), num_dense=4, sequence_fields=(2,))


def _batch(b: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    cat = torch.stack([torch.randint(0, n, (b,), generator=g) for n in SPEC.buckets], 1)
    dense = torch.randn(b, 4, generator=g)
    seq = torch.randint(0, 11, (b, 1, 3), generator=g)
    seq[0] = 0  # an empty history
    return cat, dense, seq


@pytest.mark.parametrize("arch", sorted(BACKBONES))
@pytest.mark.parametrize("towers", ["single", "decoupled"])
def test_every_backbone_returns_logits_per_row(arch: str, towers: str) -> None:
    torch.manual_seed(0)
    m = Ranker(SPEC, arch, embed_dim=4, depth=2, width=16, towers=towers)
    main, aux = m(*_batch())
    assert main.shape == aux.shape == (6,)
    assert torch.isfinite(main).all()
    assert (main is aux) == (towers == "single")
    (main.sum() + aux.sum()).backward()
    assert m.num_params() == sum(p.numel() for p in m.parameters())
    assert m.num_params(dense_only=True) == m.num_params() - sum(SPEC.buckets) * 4


def test_params_grow_with_depth_and_width() -> None:
    small = Ranker(SPEC, "dcnv2", 4, 1, 16).num_params()
    deeper = Ranker(SPEC, "dcnv2", 4, 3, 16).num_params()
    wider = Ranker(SPEC, "dcnv2", 4, 1, 64).num_params()
    assert small < deeper and small < wider


def test_sequence_padding_is_ignored() -> None:
    torch.manual_seed(0)
    m = Ranker(SPEC, "dnn", 4, 1, 8)
    cat, dense, seq = _batch()
    a = m(cat, dense, seq)[0]
    seq2 = torch.cat([seq, torch.zeros(6, 1, 2, dtype=torch.long)], dim=2)  # more padding
    assert torch.allclose(a, m(cat, dense, seq2)[0])


def test_bad_arch_and_towers_rejected() -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        Ranker(SPEC, "xgboost", 4, 1, 8)
    with pytest.raises(ValueError, match="towers"):
        Ranker(SPEC, "dnn", 4, 1, 8, towers="triple")


def test_mlp_towers_are_separate_per_head() -> None:
    torch.manual_seed(0)
    linear = Ranker(SPEC, "dnn", 4, 1, 16, towers="decoupled")
    mlp = Ranker(SPEC, "dnn", 4, 1, 16, towers="decoupled", tower_width=8)
    assert mlp.num_params() - linear.num_params() == 2 * ((16 * 8 + 8 + 8 + 1) - (16 + 1))
    main, aux = mlp(*_batch())
    assert main.shape == aux.shape == (6,) and not torch.allclose(main, aux)
