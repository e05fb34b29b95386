"""Intervals for a run's figures over its seeds and its test rows (numpy only, no Ray).

Two noises decide whether a difference is real:

- training noise: another seed gives another teacher, other initial weights, other row
  samples. Seeds are paired: in one seed the raw and the distilled student share their
  initial weights and rows, so their difference is taken seed by seed;
- test-row noise: every seed is scored on the same test rows, so this part is shared by
  all seeds and does not shrink with more of them. Each model's test AUC comes with its
  Poisson-bootstrap deviations (``metrics.BootstrapAUC``): replicate k is the same
  resample of rows for every model of every seed, so differences stay paired.

``draws`` combines both into joint draws of every model's mean AUC: the mean over seeds
plus a Student-t draw of the seed part (the seeds' own covariance, S − 1 degrees of
freedom) plus one test-row replicate. Any figure — a mean, a paired difference, η (a ratio
of differences) — is then computed on each draw, and its 95% interval is the central 95%
of those values. For a mean or a difference this is the t-interval widened by the
test-row noise; for η it carries the ratio's skew, which mean ± t·sd of per-seed ratios
does not. A resampling bootstrap over seeds (``scipy.stats.bootstrap``) is not used: with
the three to five seeds a run affords, resampling them gives intervals about half as
wide as they should be (the coverage test in tests/test_intervals.py shows it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

LEVEL = 0.95
DRAWS = 4000


@dataclass
class Figures:
    """Per-seed values of named figures (e.g. "teacher", "decoupled/raw") and, where every
    figure has them, their test-row bootstrap deviations."""

    values: dict[str, np.ndarray]  # name → (S,)
    deviations: dict[str, np.ndarray] | None = None  # name → (S, B)

    @classmethod
    def of(cls, values: dict[str, list[float]], deviations: dict[str, list[list[float] | None]] | None = None
           ) -> Figures:
        vals = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        devs = None
        if deviations and all(deviations.get(k) and all(d is not None for d in deviations[k]) for k in vals):
            # replicate k is the same rows whatever the count, so differing counts keep their common prefix
            b = min(len(d) for k in vals for d in deviations[k])
            if b:
                devs = {k: np.asarray([d[:b] for d in deviations[k]], dtype=np.float64) for k in vals}
        return cls(vals, devs)

    @property
    def seeds(self) -> int:
        return len(next(iter(self.values.values())))

    @property
    def rows_resampled(self) -> bool:
        return self.deviations is not None


def draws(f: Figures, n: int = DRAWS, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` joint draws of every figure's mean over seeds (see the module docstring).
    Seeded: a report computed twice from the same results gives the same intervals."""
    rng = np.random.default_rng(seed)
    names = list(f.values)
    a = np.stack([f.values[k] for k in names], 1)  # S × M
    s = a.shape[0]
    mean = a.mean(0)
    out = np.tile(mean, (n, 1))
    if s > 1:
        resid = (a - mean) / math.sqrt(s - 1)  # residᵀ·resid = the seeds' sample covariance
        g = rng.standard_normal((n, s))
        scale = np.sqrt(rng.chisquare(s - 1, size=(n, 1)) / (s - 1))
        out += (g @ resid) / math.sqrt(s) / scale
    if f.deviations is not None:
        dev = np.stack([f.deviations[k] for k in names], 2).mean(0)  # B × M: a replicate's shift of the mean
        out += dev[rng.integers(dev.shape[0], size=n)]
    return {k: out[:, j] for j, k in enumerate(names)}


def interval(stat: Callable[[dict[str, np.ndarray]], np.ndarray], f: Figures, d: dict[str, np.ndarray]
             ) -> dict[str, object]:
    """``stat`` of the figures' means, with its 95% interval over the draws ``d``. NaN bounds
    when there is no noise to draw from (one seed and no test-row replicates)."""
    point = float(stat({k: v.mean(keepdims=True) for k, v in f.values.items()})[0])
    out: dict[str, object] = {"mean": point}
    if f.seeds < 2 and not f.rows_resampled:
        out["ci"] = [math.nan, math.nan]
        return out
    v = stat(d)
    ok = np.isfinite(v)
    tail = (1 - LEVEL) / 2 * 100
    out["ci"] = [float(x) for x in np.percentile(v[ok], [tail, 100 - tail])] if ok.any() else [math.nan, math.nan]
    if not ok.all():  # η whose teacher gain vanished in some draws
        out["undefined_share"] = float(1 - ok.mean())
    return out


def excludes_zero(ci: list[float]) -> bool:
    lo, hi = ci
    return bool(math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0))


def finding(figure: dict[str, object]) -> bool:
    """A figure (``interval``'s output) is a finding when its interval excludes 0 and it is
    defined in all but the interval's tails (an η whose teacher is no better than the raw
    student in many draws has no interval)."""
    return excludes_zero(figure["ci"]) and float(figure.get("undefined_share", 0.0)) <= (1 - LEVEL) / 2


def spread(values: list[float]) -> dict[str, object]:
    """Mean, sample std and the Student-t 95% interval of values over seeds (NaN std and
    bounds for one value)."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean()) if x.size else math.nan
    if x.size < 2:
        return {"mean": mean, "std": math.nan, "ci": [math.nan, math.nan], "values": x.tolist()}
    sd = float(x.std(ddof=1))
    half = float(t.ppf(0.5 + LEVEL / 2, x.size - 1)) * sd / math.sqrt(x.size)
    return {"mean": mean, "std": sd, "ci": [mean - half, mean + half], "values": x.tolist()}


def ratio(num_a: str, num_b: str, den_a: str, den_b: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """(a − b) / (c − d) per draw: η = (distilled − raw) / (teacher − raw); NaN where the
    denominator is not positive (the teacher no better than the raw student)."""
    def stat(d: dict[str, np.ndarray]) -> np.ndarray:
        den = d[den_a] - d[den_b]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, (d[num_a] - d[num_b]) / den, np.nan)
    return stat
