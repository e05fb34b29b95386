"""Ranking and probability metrics for click prediction (numpy/scipy only, no Ray)."""

from __future__ import annotations

import numpy as np

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
    # imported here: scipy.stats costs about a second to import, and every Ray Train worker
    # imports this module but scores through histograms (StreamingAUC), never through here
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC (GAUC, by user): Σ n_g·AUC_g / Σ n_g.

    Groups with one class only have no AUC and are left out of both sums, as in the
    usual definition (Zhou et al., DIN); NaN when no group has both classes. Vectorised:
    one sort by (group, score), average ranks for ties inside a group.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if not (y.shape == s.shape == g.shape):
        raise ValueError(f"group_auc: labels {y.shape}, scores {s.shape} and groups {g.shape} differ in shape")
    total, weight = group_auc_sums(y, s, g)
    return total / weight if weight else float("nan")


def group_auc_sums(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """GAUC's numerator and denominator, (Σ n_g·AUC_g, Σ n_g) over the groups with both
    classes: sums that add across workers which each hold whole groups."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if y.size == 0:
        return 0.0, 0.0
    order = np.lexsort((s, g))
    gs, ss, ys = g[order], s[order], y[order]
    n = y.size
    new_group = np.r_[True, gs[1:] != gs[:-1]]
    gid = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)[gid]
    new_tie = new_group | np.r_[True, ss[1:] != ss[:-1]]
    tie_id = np.cumsum(new_tie) - 1
    tie_first = np.flatnonzero(new_tie)
    tie_last = np.r_[tie_first[1:], n] - 1
    rank = (tie_first[tie_id] + tie_last[tie_id]) / 2 - group_start + 1  # 1-based, inside the group
    cnt = np.bincount(gid)
    pos = np.bincount(gid, weights=ys)
    neg = cnt - pos
    rank_pos = np.bincount(gid, weights=rank * ys)
    ok = (pos > 0) & (neg > 0)
    if not ok.any():
        return 0.0, 0.0
    per_group = (rank_pos[ok] - pos[ok] * (pos[ok] + 1) / 2) / (pos[ok] * neg[ok])
    return float(np.sum(cnt[ok] * per_group)), float(np.sum(cnt[ok]))


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


def log_loss_sum(labels: np.ndarray, probs: np.ndarray) -> float:
    """Σ of the rows' log losses (probabilities clipped as ``log_loss`` does): what
    streaming and block-wise reductions add up."""
    y = np.asarray(labels).astype(bool)
    pc = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    return float(-(np.log(pc[y]).sum() + np.log1p(-pc[~y]).sum()))


def auc_bins(probs: np.ndarray, bins: int) -> np.ndarray:
    """Each probability's bin in ``StreamingAUC``'s histogram of ``bins`` bins (block-wise
    reductions bin the same way, so their AUC equals the streaming one)."""
    return np.minimum((np.asarray(probs, dtype=np.float64) * bins).astype(np.int64), bins - 1)


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
        idx = auc_bins(p, self.bins)
        self.pos += np.bincount(idx[y], minlength=self.bins)
        self.neg += np.bincount(idx[~y], minlength=self.bins)
        self._ll_sum += log_loss_sum(y, p)
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


_SHORT = 4  # draws 0..3 counted by comparisons (poisson_counts)
_POISSON_CDF = np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, k + 1, dtype=np.float64)) for k in range(20)])


def poisson_weights(row_ids: np.ndarray, replicates: int) -> np.ndarray:
    """(replicates, rows) Poisson(1) weights, a pure function of (row id, replicate).

    A Poisson bootstrap (each row drawn Poisson(1) times instead of n draws with
    replacement) needs no row count in advance, so every worker weights its own shard;
    and because a row's weights depend only on its id, every model scored on the same
    rows — teacher, raw and distilled students, every seed — sees the same resample, so
    differences between them stay paired.
    """
    ids = np.asarray(row_ids).astype(np.uint64).ravel()
    with np.errstate(over="ignore"):  # uint64 wraps by design (splitmix64)
        x = ids[None, :] * np.uint64(0x9E3779B97F4A7C15) + (np.arange(replicates, dtype=np.uint64)[:, None] + 1) \
            * np.uint64(0xD1B54A32D192ED03)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    u = (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return poisson_counts(u)


def poisson_counts(u: np.ndarray) -> np.ndarray:
    """Poisson(1) draws from uniforms ``u`` by inversion: ``np.searchsorted(_POISSON_CDF, u)``,
    as float32. The same numbers, ~3× faster: 98% of draws are 0-3, so four comparisons
    count them, and only the rest go through the binary search (which was 70% of a test
    batch's bootstrap weights: 5.9 s of scoring per model and 1M test rows)."""
    out = (u > _POISSON_CDF[0]).astype(np.float32)
    for c in _POISSON_CDF[1:_SHORT]:
        out += u > c
    tail = u > _POISSON_CDF[_SHORT - 1]
    out[tail] = np.searchsorted(_POISSON_CDF, u[tail])
    return out


class ResampleRows:
    """One set of rows' Poisson weights laid out for ``BootstrapAUC.update``: a (rows,
    replicates + 1) float64 array per label (the last column all ones: the unweighted
    sample). Every model scored on the same rows shares one (the weights depend on row
    ids only), so the layout is paid once per batch, not once per model."""

    def __init__(self, labels: np.ndarray, row_ids: np.ndarray, replicates: int,
                 weights: np.ndarray | None = None) -> None:
        self.labels = np.asarray(labels).astype(bool).ravel()
        self.row_ids = np.asarray(row_ids)
        w = poisson_weights(row_ids, replicates) if weights is None else np.asarray(weights)
        if w.shape != (replicates, self.labels.size):
            raise ValueError(f"bootstrap weights of shape {w.shape}, expected ({replicates}, {self.labels.size}): "
                             f"one row per replicate, one column per labelled row")
        both = np.empty((self.labels.size, replicates + 1))
        both[:, :replicates] = w.T
        both[:, replicates] = 1.0
        self.replicates = replicates
        self.by_label = (both[self.labels], both[~self.labels])  # positives', negatives' rows

    def same_rows(self, labels: np.ndarray, row_ids: np.ndarray) -> bool:
        """Whether these are the rows (ids and labels) the weights were laid out for."""
        return (np.array_equal(self.labels, np.asarray(labels).astype(bool).ravel())
                and (row_ids is self.row_ids or np.array_equal(self.row_ids, row_ids)))


class BootstrapAUC:
    """AUC under ``replicates`` Poisson resamples of the rows, in constant memory.

    Each replicate keeps weighted positive/negative histograms of the score's logit
    (``bins`` bins over [-16, 16]); the histograms add across chunks and workers. Binning
    shifts every replicate's AUC alike, so intervals are taken from the replicates'
    deviations from this accumulator's own binned full-sample AUC (``deviations``), and
    placed around the exact AUC.
    """

    LO, HI = -16.0, 16.0

    def __init__(self, replicates: int, bins: int = 1024) -> None:
        self.replicates, self.bins = replicates, bins
        self.hist = np.zeros((2, replicates + 1, bins))  # [pos/neg, replicate (last: unweighted), bin]

    def update(self, labels: np.ndarray, probs: np.ndarray, row_ids: np.ndarray,
               weights: np.ndarray | ResampleRows | None = None) -> None:
        """``weights``: the rows' ``poisson_weights(row_ids, replicates)`` or their
        ``ResampleRows`` when the caller has them (several models scored on one batch share
        them)."""
        if not self.replicates:
            return
        from scipy.sparse import csr_matrix  # ~0.2 s to import: only where a bootstrap runs

        rows = weights if isinstance(weights, ResampleRows) else ResampleRows(labels, row_ids, self.replicates, weights)
        y = np.asarray(labels).astype(bool).ravel()
        if rows.replicates != self.replicates or not rows.same_rows(y, row_ids):
            raise ValueError(f"bootstrap weights drawn for {rows.replicates} replicates of other rows (or their "
                             f"labels), used for {self.replicates} replicates of {y.size} rows")
        p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), 1e-12, 1 - 1e-12)
        z = np.log(p) - np.log1p(-p)
        idx = np.clip(((z - self.LO) / (self.HI - self.LO) * self.bins).astype(np.int64), 0, self.bins - 1)
        for k, (mask, w) in enumerate(((y, rows.by_label[0]), (~y, rows.by_label[1]))):
            if not len(w):
                continue
            # the weights summed per bin as a (bins × rows) one-hot product: 5× a flat
            # bincount of the (replicates × rows) weights; integer counts, so the sums are exact
            at = idx[mask]
            onehot = csr_matrix((np.ones(at.size), (at, np.arange(at.size))), shape=(self.bins, at.size))
            self.hist[k] += (onehot @ w).T

    def aucs(self) -> np.ndarray:
        """Binned AUC of each replicate, then of the unweighted sample (last)."""
        pos, neg = self.hist
        n_pos, n_neg = pos.sum(1), neg.sum(1)
        neg_below = np.cumsum(neg, 1) - neg
        wins = (pos * neg_below).sum(1) + 0.5 * (pos * neg).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)

    def deviations(self) -> list[float]:
        """Each replicate's AUC minus the full sample's, both binned alike."""
        a = self.aucs()
        return (a[:-1] - a[-1]).tolist()
