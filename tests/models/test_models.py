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


def test_prefix_tokens_are_the_tuples_of_codes_up_to_each_level() -> None:
    """TokenMinds' prefix tokens pinned against the tuples themselves: equal prefixes give one
    token, different ones different tokens while exact; past PREFIX_BUCKETS, a hash in range;
    no ID yet (all 0) stays 0; a model reads them in place of the per-level fields."""
    from recdistill.models.features import PREFIX_BUCKETS, prefix_buckets, prefix_tokens

    g = torch.Generator().manual_seed(0)
    levels, codes, entities = 3, 64, 2
    ids = torch.randint(1, codes + 1, (500, entities * levels), generator=g)
    ids[:5] = 0  # entities with no semantic ID yet
    ids[5:10, :2] = ids[10:15, :2]  # the same coarse prefix, other fine codes
    got = prefix_tokens(ids, entities, levels, codes)
    assert got.shape == ids.shape and prefix_buckets(levels, codes) == (65, 4225, PREFIX_BUCKETS)
    for e in range(entities):
        for level in range(levels):
            col = got[:, e * levels + level]
            tuples = [tuple(r) for r in ids[:, e * levels: e * levels + level + 1].tolist()]
            if level < 2:  # exact: one token per tuple, the mixed-radix index
                index = {t: sum(c * (codes + 1) ** (level - j) for j, c in enumerate(t)) for t in tuples}
                assert col.tolist() == [index[t] for t in tuples]
            else:  # hashed into range; the same tuple, the same token
                assert int(col.min()) >= 0 and int(col.max()) < PREFIX_BUCKETS
                seen: dict[tuple, int] = {}
                assert all(seen.setdefault(t, v) == v for t, v in zip(tuples, col.tolist()))
    assert got[:5].eq(0).all()
    spec = FeatureSpec((7,) + prefix_buckets(levels, codes) * entities, 0, code_prefix=(entities, levels, codes))
    model = Ranker(spec, "dnn", 4, 1, 8)
    cat = torch.cat([torch.randint(0, 7, (500, 1), generator=g), ids], 1)
    assert model(cat)[0].shape == (500,)
