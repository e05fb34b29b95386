"""Ranking and probability metrics for click prediction (numpy/scipy only, no Ray)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

_EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks, so ties count one half).

    NaN when only one class is present: AUC is undefined there, and a silent 0.5 would
    hide an empty or one-class evaluation window.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"auc: labels {y.shape} and scores {s.shape} differ in shape")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), _EPS, 1 - _EPS)
    if y.size == 0:
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """mean prediction / observed CTR − 1 (0 = calibrated, > 0 = over-predicts)."""
    y = np.asarray(labels, dtype=np.float64)
    if y.size == 0 or y.sum() == 0:
        return float("nan")
    return float(np.mean(probs) / np.mean(y) - 1)


class StreamingAUC:
    """AUC and LogLoss accumulated over chunks in constant memory.

    Scores in [0, 1] are binned into ``bins`` equal-width bins; pairs inside one bin count
    one half, so the error is bounded by the share of positive-negative pairs that share a
    bin (negligible at the default 2**20 bins of width ~1e-6).
    """

    def __init__(self, bins: int = 1 << 20) -> None:
        self.bins = bins
        self.pos = np.zeros(bins, dtype=np.int64)
        self.neg = np.zeros(bins, dtype=np.int64)
        self._ll_sum = 0.0
        self.n = 0

    def update(self, labels: np.ndarray, probs: np.ndarray) -> None:
        y = np.asarray(labels).astype(bool)
        p = np.asarray(probs, dtype=np.float64)
        idx = np.minimum((p * self.bins).astype(np.int64), self.bins - 1)
        self.pos += np.bincount(idx[y], minlength=self.bins)
        self.neg += np.bincount(idx[~y], minlength=self.bins)
        pc = np.clip(p, _EPS, 1 - _EPS)
        self._ll_sum += float(-(np.log(pc[y]).sum() + np.log1p(-pc[~y]).sum()))
        self.n += y.size

    def auc(self) -> float:
        n_pos, n_neg = self.pos.sum(), self.neg.sum()
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        neg_below = np.cumsum(self.neg) - self.neg
        wins = (self.pos * neg_below).sum() + 0.5 * (self.pos * self.neg).sum()
        return float(wins / (n_pos * n_neg))

    def log_loss(self) -> float:
        return self._ll_sum / self.n if self.n else float("nan")
