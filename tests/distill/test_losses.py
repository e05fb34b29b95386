"""Distillation losses and the debias correction, pinned against naive references written
straight from the formulas (per element, in float64 Python math)."""

import math

import pytest
import torch

from recdistill.distill.debias import SamplingCorrection, distill_targets
from recdistill.distill.losses import kl, mse, soft_ce, task_loss
from recdistill.distill.objective import Objective


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


Z_S = [-3.0, -0.5, 0.0, 1.2, 4.0]
Z_T = [-2.0, 0.3, -1.0, 2.5, 3.0]


def _naive_soft_ce(T: float) -> float:
    terms = []
    for zs, zt in zip(Z_S, Z_T):
        pt, ps = _sig(zt / T), _sig(zs / T)
        terms.append(-(pt * math.log(ps) + (1 - pt) * math.log(1 - ps)))  # Eq. 8 on z/T
    return T * T * sum(terms) / len(terms)


def _naive_kl(T: float) -> float:
    terms = []
    for zs, zt in zip(Z_S, Z_T):
        pt, ps = _sig(zt / T), _sig(zs / T)
        terms.append(pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps)))  # Eq. 2
    return T * T * sum(terms) / len(terms)


def _naive_mse(T: float) -> float:
    return sum((_sig(zs / T) - _sig(zt / T)) ** 2 for zs, zt in zip(Z_S, Z_T)) / len(Z_S)


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("fn, ref", [(soft_ce, _naive_soft_ce), (kl, _naive_kl), (mse, _naive_mse)])
def test_losses_match_formulas(fn, ref, T: float) -> None:
    zs, zt = torch.tensor(Z_S, dtype=torch.float64), torch.tensor(Z_T, dtype=torch.float64)
    assert fn(zs, zt, T).item() == pytest.approx(ref(T), rel=1e-10)


def test_soft_ce_gradient_is_p_s_minus_p_t_and_teacher_gets_none() -> None:
    zs = torch.tensor(Z_S, dtype=torch.float64, requires_grad=True)
    zt = torch.tensor(Z_T, dtype=torch.float64, requires_grad=True)
    soft_ce(zs, zt).backward()
    expected = [(_sig(a) - _sig(b)) / len(Z_S) for a, b in zip(Z_S, Z_T)]  # Eq. 10
    assert zs.grad.tolist() == pytest.approx(expected, rel=1e-10)
    assert zt.grad is None or torch.all(zt.grad == 0)


def test_kl_is_zero_at_the_teacher_and_mask_drops_rows() -> None:
    zt = torch.tensor(Z_T, dtype=torch.float64)
    assert kl(zt.clone(), zt).item() == pytest.approx(0.0, abs=1e-12)
    zs = torch.tensor(Z_S, dtype=torch.float64)
    mask = torch.tensor([True, False, True, False, False])
    sub = soft_ce(zs[mask], zt[mask])
    assert soft_ce(zs, zt, mask=mask).item() == pytest.approx(sub.item())
    assert soft_ce(zs, zt, mask=torch.zeros(5, dtype=torch.bool)).item() == 0.0


def test_task_loss_is_bce() -> None:
    z = torch.tensor([0.3, -1.0], dtype=torch.float64)
    y = torch.tensor([1, 0])
    ref = -(math.log(_sig(0.3)) + math.log(1 - _sig(-1.0))) / 2
    assert task_loss(z, y).item() == pytest.approx(ref)


@pytest.mark.parametrize("r_s, r_plus, p_x, b_s", [(8.0, 1.0, 1.0, 0.0), (4.0, 0.9, 0.8, 0.05), (2.0, 1.0, 0.7, 0.2)])
def test_debias_matches_eq12(r_s: float, r_plus: float, p_x: float, b_s: float) -> None:
    f = SamplingCorrection(r_s, r_plus, p_x, b_s)
    for z in (-4.0, -0.3, 0.0, 2.0):
        naive = 1.0 / (1.0 + (r_s / p_x) * (math.exp(-z) + 1 - r_plus + b_s))
        assert f.prob(torch.tensor(z, dtype=torch.float64)).item() == pytest.approx(naive, rel=1e-12)


def test_classic_downsampling_correction() -> None:
    f = SamplingCorrection.from_negative_keep_rate(0.25)
    z = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert f.logit(z).tolist() == pytest.approx([math.log(0.25), 1 + math.log(0.25)])


def test_distill_targets_use_student_correction_for_both() -> None:
    fs, ft = SamplingCorrection(r_s=4.0), SamplingCorrection(r_s=1.0)
    t1, s1 = torch.tensor([0.5]), torch.tensor([-0.2])
    t, s = distill_targets(t1, s1, fs, ft, debias=True, debias_with="student")
    assert t.item() == pytest.approx(0.5 - math.log(4)) and s.item() == pytest.approx(-0.2 - math.log(4))
    t, _ = distill_targets(t1, s1, fs, ft, debias=True, debias_with="teacher")
    assert t.item() == pytest.approx(0.5)
    t, s = distill_targets(t1, s1, fs, ft, debias=False, debias_with="student")
    assert (t.item(), s.item()) == pytest.approx((0.5, -0.2))


def test_objective_forms_and_towers() -> None:
    y = torch.tensor([1.0, 0.0, 0.0])
    main, aux = torch.tensor([0.2, -0.1, 0.4]), torch.tensor([0.1, 0.3, -0.2])
    zt = torch.tensor([1.0, -1.0, 0.0])
    free = Objective(alpha=2.0, debias=False)(main, aux, True, y, zt)
    assert free["total"].item() == pytest.approx(
        (task_loss(main, y) + task_loss(aux, y) + 2.0 * soft_ce(aux, zt)).item())
    convex = Objective(alpha=0.7, form="convex", debias=False)(main, main, False, y, zt)
    assert convex["total"].item() == pytest.approx((0.7 * soft_ce(main, zt) + 0.3 * task_loss(main, y)).item())
    raw = Objective(alpha=2.0)(main, aux, True, y, None)
    assert raw["total"].item() == pytest.approx((task_loss(main, y) + task_loss(aux, y)).item())
    with pytest.raises(ValueError, match="convex"):
        Objective(alpha=2.0, form="convex")


def test_crossadapt_loss_with_unlabelled_rows_matches_formula() -> None:
    """CrossAdapt's transfer loss, α·T²·BCE(z_S/T, σ(z_T/T)) + (1−α)·BCE(z_S, y), where
    augmented rows (no label) get the distill term only: written per row from the formula."""
    T, alpha = 4.0, 0.7
    y = [1.0, 0.0, 0.0, 1.0, 0.0]
    labelled = [True, True, False, True, False]
    kd = [-(_sig(zt / T) * math.log(_sig(zs / T)) + (1 - _sig(zt / T)) * math.log(1 - _sig(zs / T)))
          for zs, zt in zip(Z_S, Z_T)]
    bce = [-(yy * math.log(_sig(zs)) + (1 - yy) * math.log(1 - _sig(zs))) for zs, yy in zip(Z_S, y)]
    naive = (alpha * T * T * sum(kd) / len(kd)
             + (1 - alpha) * sum(b for b, m in zip(bce, labelled) if m) / sum(labelled))
    z = torch.tensor(Z_S, dtype=torch.float64)
    got = Objective(alpha=alpha, form="convex", temperature=T, debias=False)(
        z, z, False, torch.tensor(y, dtype=torch.float64), torch.tensor(Z_T, dtype=torch.float64),
        label_mask=torch.tensor(labelled))
    assert got["total"].item() == pytest.approx(naive, rel=1e-12)
    assert task_loss(z, torch.tensor(y), torch.tensor(labelled)).item() == pytest.approx(
        sum(b for b, m in zip(bce, labelled) if m) / sum(labelled), rel=1e-12)


@pytest.mark.parametrize("decoupled", [False, True])
def test_unlabelled_rows_objective_matches_formula(decoupled: bool) -> None:
    """Issue 18's student on rows it has no label for, per row from the formula: aux =
    BCE over the labelled rows + α·mean soft CE over the labelled rows with a signal +
    α_u·mean soft CE over the unlabelled rows with a signal; each kind's debias uses its
    own rate (labelled rows: the student's negative keep rate; unlabelled: none)."""
    alpha, alpha_u, keep = 3.0, 10.0, 0.25
    y = [1.0, 0.0, 0.0, 1.0, 0.0]
    labelled = [True, False, True, False, False]
    signal = [True, True, False, True, True]
    main_z = [0.4, -0.2, 0.1, 0.9, -1.1]

    def soft(zs: float, zt: float) -> float:
        pt, ps = _sig(zt), _sig(zs)
        return -(pt * math.log(ps) + (1 - pt) * math.log(1 - ps))

    def bce(z: float, yy: float) -> float:
        return -(yy * math.log(_sig(z)) + (1 - yy) * math.log(1 - _sig(z)))

    shift = math.log(1 / keep)  # Eq. 12 with r_+ = 1: z − log r_s, on both logits
    kd_l = [soft(zs - shift, zt - shift) for zs, zt, lab, sig in zip(Z_S, Z_T, labelled, signal) if lab and sig]
    kd_u = [soft(zs, zt) for zs, zt, lab, sig in zip(Z_S, Z_T, labelled, signal) if not lab and sig]
    task_aux = sum(bce(z, yy) for z, yy, lab in zip(Z_S, y, labelled) if lab) / sum(labelled)
    task_main = sum(bce(z, yy) for z, yy, lab in zip(main_z, y, labelled) if lab) / sum(labelled)
    aux_total = task_aux + alpha * sum(kd_l) / len(kd_l) + alpha_u * sum(kd_u) / len(kd_u)
    naive = task_main + aux_total if decoupled else aux_total
    aux = torch.tensor(Z_S, dtype=torch.float64)
    main = torch.tensor(main_z, dtype=torch.float64) if decoupled else aux
    got = Objective(alpha=alpha, unlabelled_alpha=alpha_u,
                    student_sampling=SamplingCorrection.from_negative_keep_rate(keep))(
        main, aux, decoupled, torch.tensor(y, dtype=torch.float64), torch.tensor(Z_T, dtype=torch.float64),
        torch.tensor(signal), torch.tensor(labelled))
    assert got["total"].item() == pytest.approx(naive, rel=1e-12)
    assert got["distill_unlabelled"].item() == pytest.approx(sum(kd_u) / len(kd_u), rel=1e-12)
