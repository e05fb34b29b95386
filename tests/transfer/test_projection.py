import math

import pytest
import torch

from recdistill.models.features import FeatureEmbedding, FeatureSpec
from recdistill.transfer.projection import (
    FieldReport,
    grow_matrix,
    identity_pairs,
    map_rows,
    project_rows,
    project_table,
    shrink_pca,
)


def _rows(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rows with a decaying spectrum and a non-zero mean, so truncation and centring both matter."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.7 ** i for i in range(d)], dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * scale + 0.3
    return x.to(dtype)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("d_s", [3, 7])
def test_pca_errors_match_the_spectrum(d_s: int) -> None:
    x = _rows(50, 12)
    res = project_rows(x, d_s, _gen())
    assert res.method == "pca"
    s = torch.linalg.svdvals(x - x.mean(0))
    s2, s4 = s.square(), s.pow(4)
    assert res.gram_distortion == pytest.approx(math.sqrt(s4[d_s:].sum() / s4.sum()), rel=1e-9, abs=1e-12)
    assert res.rel_recon_error == pytest.approx(math.sqrt(s2[d_s:].sum() / s2.sum()), rel=1e-9, abs=1e-12)
    assert res.energy_kept == pytest.approx(float(s2[:d_s].sum() / s2.sum()), rel=1e-12)
    # the projected rows are centred (the mean is dropped on purpose)
    assert torch.allclose(res.weight.mean(0), torch.zeros(d_s, dtype=torch.float64), atol=1e-12)


def test_pca_gram_on_a_sample_stays_close_to_the_full_value() -> None:
    x = _rows(300, 10, seed=1)
    full = project_rows(x, 4, _gen(), gram_sample=300).gram_distortion
    sampled = project_rows(x, 4, _gen(), gram_sample=100).gram_distortion
    assert sampled == pytest.approx(full, rel=0.5)


def test_shrink_pca_outputs_are_consistent() -> None:
    x = _rows(40, 9)
    proj, comps, mean, s = shrink_pca(x, 5)
    assert proj.shape == (40, 5) and comps.shape == (9, 5) and mean.shape == (9,) and s.shape == (9,)
    assert torch.allclose(comps.T @ comps, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(proj, (x - mean) @ comps, atol=1e-12)


def test_pca_zero_pads_when_there_are_fewer_directions_than_d_s() -> None:
    x = _rows(3, 16)
    proj, comps, _, _ = shrink_pca(x, 8)
    # 3 centred rows span at most 2 directions
    assert comps.shape == (16, 2)
    assert proj.shape == (3, 8)
    assert torch.equal(proj[:, 2:], torch.zeros(3, 6, dtype=torch.float64))
    assert proj[:, :2].abs().sum() > 0
    res = project_rows(x, 8, _gen())
    assert res.rel_recon_error == pytest.approx(0.0, abs=1e-12)
    assert res.gram_distortion == pytest.approx(0.0, abs=1e-12)


def test_grow_matrix_has_orthonormal_rows() -> None:
    w = grow_matrix(5, 13, _gen())
    assert w.shape == (5, 13)
    assert torch.allclose(w @ w.T, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert torch.equal(w, grow_matrix(5, 13, _gen()))
    with pytest.raises(ValueError):
        grow_matrix(6, 4, _gen())


def test_qr_growth_keeps_inner_products() -> None:
    e = _rows(100, 8, dtype=torch.float32)
    res = project_rows(e, 24, _gen())
    assert res.method == "qr" and res.weight.shape == (100, 24) and res.weight.dtype == torch.float32
    g, gs = e @ e.T, res.weight @ res.weight.T
    assert float(torch.linalg.matrix_norm(g - gs) / torch.linalg.matrix_norm(g)) < 1e-5
    assert res.gram_distortion < 1e-5 and res.rel_recon_error < 1e-5
    assert res.energy_kept == 1.0


def test_identity_when_dims_match() -> None:
    x = _rows(20, 6)
    res = project_rows(x, 6, _gen())
    assert res.method == "identity"
    assert torch.equal(res.weight, x) and res.weight is not x
    assert res.rel_recon_error == 0.0 and res.gram_distortion == 0.0 and res.energy_kept == 1.0


def _naive_map(teacher: torch.Tensor, init: torch.Tensor, s_codes: list[int], t_codes: list[int],
               weights: list[float]) -> torch.Tensor:
    out = init.clone()
    for s in range(init.shape[0]):
        hits = [(t, w) for sc, t, w in zip(s_codes, t_codes, weights) if sc == s]
        total = sum(w for _, w in hits)
        if total > 0:
            out[s] = sum(w * teacher[t] for t, w in hits) / total
    out[:2] = teacher[:2]
    return out


def test_map_rows_takes_the_weighted_mean_of_merged_ids() -> None:
    teacher = _rows(6, 3, seed=2)
    init = _rows(5, 3, seed=3)
    # teacher ids 2 and 5 both map to student id 3; student 4 sees teacher 3; student 2 sees nothing;
    # a pair for student 0 is overridden by the reserved-row rule
    s_codes, t_codes, weights = [3, 3, 4, 0], [2, 5, 3, 4], [1.0, 3.0, 2.0, 5.0]
    pairs = (torch.tensor(s_codes), torch.tensor(t_codes), torch.tensor(weights))
    rows, mapped, unmapped = map_rows(teacher, init, pairs)
    assert torch.allclose(rows, _naive_map(teacher, init, s_codes, t_codes, weights), atol=1e-12)
    assert torch.allclose(rows[3], (teacher[2] + 3 * teacher[5]) / 4, atol=1e-12)
    assert torch.equal(rows[2], init[2])
    assert (mapped, unmapped) == (4, 1)
    assert not torch.equal(init[3], rows[3])  # input left alone, output is a new tensor


def test_map_rows_counts_unmapped_rows_and_keeps_their_init() -> None:
    teacher = _rows(4, 2, seed=4)
    init = _rows(10, 2, seed=5)
    pairs = (torch.tensor([2, 7]), torch.tensor([3, 2]), torch.tensor([1, 0]))  # zero weight = not seen
    rows, mapped, unmapped = map_rows(teacher, init, pairs)
    assert (mapped, unmapped) == (3, 7)
    assert torch.equal(rows[2], teacher[3])
    keep = [i for i in range(10) if i not in (0, 1, 2)]
    assert torch.equal(rows[keep], init[keep])


def test_map_rows_rejects_out_of_range_codes() -> None:
    with pytest.raises(ValueError):
        map_rows(torch.zeros(4, 2), torch.zeros(5, 2), (torch.tensor([5]), torch.tensor([0]), torch.ones(1)))
    with pytest.raises(ValueError):
        map_rows(torch.zeros(4, 2), torch.zeros(5, 2), (torch.tensor([2]), torch.tensor([4]), torch.ones(1)))


def test_identity_pairs_copy_rows() -> None:
    teacher = _rows(7, 3)
    rows, mapped, unmapped = map_rows(teacher, torch.zeros(7, 3, dtype=torch.float64), identity_pairs(7))
    assert torch.equal(rows, teacher) and (mapped, unmapped) == (7, 0)


SPEC = FeatureSpec(buckets=(5, 7), num_dense=2)


@pytest.mark.parametrize(("d_t", "d_s", "method"), [(8, 4, "pca"), (4, 8, "qr")])
def test_project_table_writes_each_field_at_its_offset(d_t: int, d_s: int, method: str) -> None:
    torch.manual_seed(0)
    teacher, student = FeatureEmbedding(SPEC, d_t), FeatureEmbedding(SPEC, d_s)
    dense_before = student.dense.weight.detach().clone()
    reports = project_table(teacher, student, None, seed=11)
    assert [r.field for r in reports] == [0, 1]
    assert all(isinstance(r, FieldReport) and r.method == method for r in reports)
    assert [(r.rows, r.mapped, r.unmapped) for r in reports] == [(5, 5, 0), (7, 7, 0)]
    assert reports[1].to_dict()["d_t"] == d_t and reports[1].to_dict()["d_s"] == d_s
    tw, sw = teacher.table.weight.detach(), student.table.weight.detach()
    for lo, hi in [(0, 5), (5, 12)]:
        want = project_rows(tw[lo:hi], d_s, torch.Generator().manual_seed(11)).weight
        assert torch.allclose(sw[lo:hi], want, atol=1e-6)
    assert torch.equal(student.dense.weight, dense_before)
    if method == "qr":  # one W for every field keeps cross-field inner products as well
        assert torch.allclose(sw @ sw.T, tw @ tw.T, atol=1e-6)


def test_project_table_with_pairs_for_a_resized_field() -> None:
    torch.manual_seed(0)
    teacher = FeatureEmbedding(SPEC, 8)
    student = FeatureEmbedding(FeatureSpec(buckets=(5, 9), num_dense=2), 4)
    init = student.table.weight.detach().clone()
    pairs = (torch.tensor([2, 3, 3, 8]), torch.tensor([2, 4, 6, 5]), torch.tensor([1.0, 1.0, 1.0, 2.0]))
    reports = project_table(teacher, student, [None, pairs], seed=3)
    assert (reports[1].mapped, reports[1].unmapped) == (5, 4)
    proj = project_rows(teacher.table.weight.detach()[5:12], 4, torch.Generator().manual_seed(3)).weight
    sw = student.table.weight.detach()
    assert torch.allclose(sw[5 + 3], (proj[4] + proj[6]) / 2, atol=1e-6)
    assert torch.allclose(sw[5:7], proj[:2], atol=1e-6)
    assert torch.equal(sw[5 + 4], init[5 + 4])


def test_project_table_needs_pairs_when_buckets_differ() -> None:
    teacher = FeatureEmbedding(SPEC, 8)
    student = FeatureEmbedding(FeatureSpec(buckets=(5, 9), num_dense=2), 4)
    with pytest.raises(ValueError, match=r"field 1.*7.*9"):
        project_table(teacher, student, None, seed=0)
