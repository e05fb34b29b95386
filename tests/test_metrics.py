import numpy as np
import pytest

from recdistill.metrics import StreamingAUC, auc, calibration, group_auc, log_loss


def _naive_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # rounding makes many ties
    assert auc(y, s) == pytest.approx(_naive_auc(y, s), abs=1e-12)


def test_auc_exact_values_and_one_class() -> None:
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert np.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_log_loss_and_calibration_from_formula() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.6, 0.4])
    ref = -np.mean([np.log(0.9), np.log(0.8), np.log(0.6), np.log(0.6)])
    assert log_loss(y, p) == pytest.approx(ref)
    assert calibration(y, p) == pytest.approx(np.mean(p) / 0.5 - 1)


def test_streaming_auc_agrees_with_exact() -> None:
    rng = np.random.default_rng(1)
    acc = StreamingAUC()
    ys, ps = [], []
    for _ in range(5):
        p = rng.beta(1, 8, 20_000)
        y = (rng.random(p.size) < p).astype(np.int8)
        acc.update(y, p)
        ys.append(y)
        ps.append(p)
    y, p = np.concatenate(ys), np.concatenate(ps)
    assert acc.auc() == pytest.approx(auc(y, p), abs=1e-5)
    assert acc.log_loss() == pytest.approx(log_loss(y, p), rel=1e-9)


def test_group_auc_matches_per_group_loop_with_ties() -> None:
    rng = np.random.default_rng(3)
    g = rng.integers(0, 12, 400)
    y = rng.integers(0, 2, 400)
    y[g == 5] = 1  # a one-class group: no AUC, left out
    s = np.round(rng.random(400) + 0.2 * y + 0.05 * g, 1)
    num = den = 0.0
    for k in np.unique(g):
        m = g == k
        if 0 < y[m].sum() < m.sum():
            num += m.sum() * _naive_auc(y[m], s[m])
            den += m.sum()
    assert group_auc(y, s, g) == pytest.approx(num / den, abs=1e-12)
    assert np.isnan(group_auc(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3]), np.array([0, 0, 1])))
