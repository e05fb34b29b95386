"""The online pieces in plain PyTorch / NumPy: τ accumulation, replay reservoir, shift detector."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from recdistill.data.tensors import TensorLog
from recdistill.models import FeatureSpec, Ranker
from recdistill.online.learner import StreamLearner
from recdistill.online.replay import ReplayBuffer
from recdistill.online.shift import OTHER, ShiftDetector, js_divergence, profile

SPEC = FeatureSpec(buckets=(7, 11), num_dense=3)


def _log(n: int, seed: int = 0) -> TensorLog:
    g = torch.Generator().manual_seed(seed)
    return TensorLog(cat=torch.stack([torch.randint(0, 7, (n,), generator=g), torch.randint(0, 11, (n,), generator=g)], 1),
                     dense=torch.randn(n, 3, generator=g), seq=torch.zeros(n, 0, 1, dtype=torch.long),
                     label=(torch.rand(n, generator=g) < 0.3).float(), sample_rate=torch.ones(n),
                     row_id=torch.arange(n))


def _model(sparse: bool = True) -> Ranker:
    torch.manual_seed(3)
    return Ranker(SPEC, "dcnv2", 4, 1, 8, sparse_embeddings=sparse)


@pytest.mark.parametrize("sparse", [True, False])
def test_tau_steps_once_per_interval_with_the_mean_gradient(sparse: bool) -> None:
    data, tau = _log(400), 4
    lazy = StreamLearner(_model(sparse), lr=1e-2, embedding_lr=1e-2, interval=tau)
    big = StreamLearner(_model(sparse), lr=1e-2, embedding_lr=1e-2, interval=1)
    before = {k: v.clone() for k, v in lazy.model.state_dict().items()}
    for i in range(tau - 1):
        z = lazy.learn(data.take(slice(25 * i, 25 * i + 25)))
        assert torch.allclose(z, big.model(*_inputs(data.take(slice(25 * i, 25 * i + 25))))[0].detach())
    assert lazy.steps == 0 and all(torch.equal(before[k], v) for k, v in lazy.model.state_dict().items())
    lazy.learn(data.take(slice(75, 100)))
    assert lazy.steps == 1 and lazy.pending == 0
    # τ accumulated batches of 25 rows = one step on their 100 rows with the mean loss
    big.learn(data.take(slice(0, 100)))
    for (k, a), b in zip(lazy.model.state_dict().items(), big.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def _inputs(b: TensorLog) -> tuple[torch.Tensor, ...]:
    return b.cat, b.dense, b.seq


def test_frozen_teacher_never_changes_and_state_round_trips() -> None:
    data = _log(200)
    frozen = StreamLearner(_model(), lr=1e-2, embedding_lr=1e-2, interval=None)
    before = {k: v.clone() for k, v in frozen.model.state_dict().items()}
    for i in range(4):
        frozen.learn(data.take(slice(50 * i, 50 * i + 50)))
    assert frozen.steps == 0 and all(torch.equal(before[k], v) for k, v in frozen.model.state_dict().items())

    a = StreamLearner(_model(), lr=1e-2, embedding_lr=1e-2, interval=3)
    a.learn(data.take(slice(0, 50)))  # mid-interval: one accumulated gradient pending
    b = StreamLearner(_model(), lr=1e-2, embedding_lr=1e-2, interval=3)
    b.load(a.state())
    for learner in (a, b):
        learner.learn(data.take(slice(50, 100)))
        learner.learn(data.take(slice(100, 150)))
    assert a.steps == b.steps == 1
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(x, y), k
    with pytest.raises(ValueError, match="interval"):
        StreamLearner(_model(), lr=1e-2, embedding_lr=1e-2, interval=0)


def test_replay_buffer_is_bounded_and_uniform_over_the_stream() -> None:
    buf = ReplayBuffer(capacity=500, seed=0)
    windows = [_log(1000, seed=w) for w in range(10)]
    for w, rows in enumerate(windows):
        rows.row_id += w * 1000  # stream position = row id
        buf.add(rows, torch.full((len(rows),), float(w)))
        assert len(buf) == min(500, 1000 * (w + 1))
    # a uniform sample of 10 windows: ~50 rows each (binomial sd ~6.7)
    per_window = np.bincount((buf.rows.row_id // 1000).numpy(), minlength=10)
    assert per_window.min() > 25 and per_window.max() < 80, per_window
    # each slot's logit still belongs to its row (the logit was its window)
    assert torch.equal(buf.logits, (buf.rows.row_id // 1000).float())
    rows, logits = buf.sample(64)
    assert len(rows) == 64 and torch.equal(logits, (rows.row_id // 1000).float())
    # the window that filled it first is not modified in place when slots are replaced
    assert torch.equal(windows[0].row_id, torch.arange(1000))
    other = ReplayBuffer(capacity=500, seed=5)
    other.load(buf.state())
    assert torch.equal(other.sample(8)[0].row_id, buf.sample(8)[0].row_id)


def test_js_divergence_matches_scipy_and_the_formula() -> None:
    p, q = np.array([3.0, 1.0, 0.0]), np.array([1.0, 1.0, 2.0])
    pn, qn = p / p.sum(), q / q.sum()
    m = (pn + qn) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        return float(sum(x * np.log2(x / y) for x, y in zip(a, b) if x > 0))

    assert js_divergence(p, q) == pytest.approx(0.5 * kl(pn, m) + 0.5 * kl(qn, m))
    assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1.0)


def _window(rng: np.random.Generator, n: int, ctr: float, ids: int, offset: int = 0) -> tuple[np.ndarray, ...]:
    y = (rng.random(n) < ctr).astype(np.float32)
    p = np.clip(rng.normal(ctr, 0.05, n), 0, 1)
    cat = np.stack([rng.zipf(1.5, n) % ids + offset, rng.integers(0, 5, n)], 1)
    return y, p, cat


def test_detector_fires_on_a_shift_only() -> None:
    rng = np.random.default_rng(0)
    det = ShiftDetector(threshold=0.05, history=3, top_k=20)
    scores = []
    for w in range(8):
        shifted = w >= 5
        y, p, cat = _window(rng, 5000, 0.4 if shifted else 0.25, 1000, offset=500 if shifted else 0)
        prof = profile(y, p, cat, keep=200)
        scores.append(det.score(prof))
        det.push(prof)
    assert [s["fired"] for s in scores[:6]] == [False] * 5 + [True]
    assert max(s["js"] for s in scores[:5]) < 0.01 < scores[5]["js_fields"]
    # the shifted windows join the reference: the divergence decays as the past catches up
    assert scores[5]["js"] > scores[6]["js"] > scores[7]["js"]
    assert len(det.past) == 3  # bounded memory: only the recent past is kept


def test_profile_keeps_top_ids_and_counts_the_rest() -> None:
    cat = np.array([[1], [1], [1], [2], [2], [3], [4]])
    prof = profile(np.zeros(7), np.zeros(7), cat, keep=2)
    assert prof.fields[0] == Counter({1: 3, 2: 2, OTHER: 2})
