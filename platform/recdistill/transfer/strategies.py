"""Strategic offline sampling (CrossAdapt's offline stage), as pure Ray Data batch steps.

Before distilling into a new student, CrossAdapt samples the offline log with one of
several strategies: ``random``; ``biased`` (rebalanced to a target positive rate, with
replacement); ``temporal`` (weights rising with recency); ``recent`` (only the last part of
the time span); or a ``mixture`` of these. To compare them fairly every strategy is held to
the same *expected* budget: the expected number of output rows is ``budget × input rows``.

Every strategy is written as a per-row expected copy count ``λ_i`` normalised so that
``Σ_i λ_i = budget × rows`` over the whole log, and each row is then drawn
``Poisson(λ_i)`` times (the Poisson bootstrap). Poisson draws need no coordination between
rows, so sampling *with replacement* runs as an independent ``map_batches`` step on each
block; the only global quantities (row and positive counts, the span of the order column)
come in through a small :class:`LogStats` that the caller computes beforehand.

The Poisson draw inverts the Poisson CDF at ``row_uniform(row_id, seed)``, a hash of
(seed, row id), so the same rows and the same copy counts come out whatever the block
layout, as in :mod:`recdistill.data.sampling`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
from scipy import special

from recdistill.data.sampling import row_uniform
from recdistill.data.schema import LABEL, ROW_ID, SAMPLE_RATE

Kind = Literal["random", "biased", "temporal", "recent", "mixture"]
KINDS: tuple[str, ...] = get_args(Kind)
# Kinds a mixture may combine (a mixture of mixtures is just a longer mixture).
BASE_KINDS: tuple[str, ...] = ("random", "biased", "temporal", "recent")
TIME_KINDS: tuple[str, ...] = ("temporal", "recent")
# Column numbering the copies of one row drawn more than once (0 .. count − 1).
COPY = "copy"
# exp(100) ≈ 2.7e43 still sums without overflow; a newest/oldest weight ratio beyond that is meaningless.
MAX_RECENCY_STRENGTH = 100.0
_SHARE_TOL = 1e-6


@dataclass(frozen=True)
class LogStats:
    """Whole-log statistics a per-batch sampler cannot see, computed once by the caller.

    ``order_min``/``order_max`` span the order column (``LogSchema.order_column``). The
    optional exact normalisers replace the even-spread-in-time assumption of the
    ``temporal`` and ``recent`` strategies; build them with :func:`weight_sum` and
    :func:`with_exact_normalisers`. Each records the strategy parameter it was computed for,
    so a mismatched strategy is refused rather than silently mis-normalised.
    """

    rows: int
    positives: int
    order_min: float
    order_max: float
    weight_mean: float | None = None  # exact mean over the log of exp(recency_strength · u)
    weight_strength: float | None = None  # the recency_strength weight_mean was computed for
    recent_share: float | None = None  # exact share of rows with u ≥ 1 − recent_fraction
    recent_fraction: float | None = None  # the recent_fraction recent_share was computed for

    def __post_init__(self) -> None:
        if self.rows <= 0:
            raise ValueError(f"LogStats.rows={self.rows}: expected a row count > 0")
        if not 0 <= self.positives <= self.rows:
            raise ValueError(f"LogStats.positives={self.positives}: expected 0 ≤ positives ≤ rows={self.rows}")
        if not (math.isfinite(self.order_min) and math.isfinite(self.order_max)) or self.order_min > self.order_max:
            raise ValueError(f"LogStats.order_min={self.order_min}, order_max={self.order_max}: "
                             "expected finite values with order_min ≤ order_max")
        if (self.weight_mean is None) != (self.weight_strength is None):
            raise ValueError("LogStats.weight_mean and weight_strength must be given together")
        if self.weight_mean is not None and not (math.isfinite(self.weight_mean) and self.weight_mean > 0):
            raise ValueError(f"LogStats.weight_mean={self.weight_mean}: expected a finite mean weight > 0")
        if (self.recent_share is None) != (self.recent_fraction is None):
            raise ValueError("LogStats.recent_share and recent_fraction must be given together")
        if self.recent_share is not None and not 0 < self.recent_share <= 1:
            raise ValueError(f"LogStats.recent_share={self.recent_share}: expected a share in (0, 1] "
                             "(no rows in the recent span leaves nothing to sample)")

    @property
    def positive_rate(self) -> float:
        return self.positives / self.rows


@dataclass(frozen=True)
class Strategy:
    """One offline sampling strategy at an expected budget (expected output rows / input rows).

    Every kind samples with replacement (Poisson copies), so ``budget`` may exceed 1.
    ``temporal`` weighs a row by ``exp(recency_strength · u)`` with
    ``u = (t − order_min) / (order_max − order_min)`` in [0, 1]; ``recent`` keeps only rows
    with ``u ≥ 1 − recent_fraction``; ``biased`` rebalances to ``target_positive_rate``;
    ``mixture`` is ``Σ share_k · λ_k`` over ``(kind, share)`` pairs, each component at the
    full budget and with this strategy's parameters, so the mixture meets the budget too.
    """

    kind: Kind
    budget: float
    target_positive_rate: float = 0.5
    recency_strength: float = 3.0
    recent_fraction: float = 0.25
    mixture: tuple[tuple[str, float], ...] = (("biased", 0.5), ("temporal", 0.5))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Strategy.kind={self.kind!r}: expected one of {KINDS}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, numbers.Real) \
                or not math.isfinite(self.budget) or self.budget <= 0:
            raise ValueError(f"Strategy.budget={self.budget!r}: expected a finite number > 0 "
                             "(expected output rows / input rows; may exceed 1)")
        if not 0 < self.target_positive_rate < 1:
            raise ValueError(f"Strategy.target_positive_rate={self.target_positive_rate}: expected a rate in (0, 1)")
        if not 0 <= self.recency_strength <= MAX_RECENCY_STRENGTH:
            raise ValueError(f"Strategy.recency_strength={self.recency_strength}: "
                             f"expected a value in [0, {MAX_RECENCY_STRENGTH:g}]")
        if not 0 < self.recent_fraction <= 1:
            raise ValueError(f"Strategy.recent_fraction={self.recent_fraction}: expected a fraction in (0, 1]")
        try:
            mix = tuple((str(k), float(s)) for k, s in self.mixture)
        except (TypeError, ValueError) as e:
            raise ValueError(f"Strategy.mixture={self.mixture!r}: expected (kind, share) pairs") from e
        object.__setattr__(self, "mixture", mix)
        if not mix:
            raise ValueError("Strategy.mixture is empty: expected at least one (kind, share) pair")
        kinds = [k for k, _ in mix]
        bad = [k for k in kinds if k not in BASE_KINDS]
        if bad:
            raise ValueError(f"Strategy.mixture kinds {bad}: expected kinds from {BASE_KINDS}")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"Strategy.mixture kinds {kinds}: each kind may appear once")
        if any(not 0 < s <= 1 for _, s in mix):
            raise ValueError(f"Strategy.mixture shares {[s for _, s in mix]}: expected each share in (0, 1]")
        total = sum(s for _, s in mix)
        if abs(total - 1.0) > _SHARE_TOL:
            raise ValueError(f"Strategy.mixture shares sum to {total:g}: expected them to sum to 1")

    def components(self) -> tuple[tuple[str, float], ...]:
        """``(kind, share)`` pairs: the mixture's, or this kind alone with share 1."""
        return self.mixture if self.kind == "mixture" else ((self.kind, 1.0),)

    @property
    def uses_time(self) -> bool:
        return any(k in TIME_KINDS for k, _ in self.components())

    @property
    def uses_label(self) -> bool:
        return any(k == "biased" for k, _ in self.components())


# ---------------------------------------------------------------- normalisers


def _span(stats: LogStats) -> float:
    return float(stats.order_max) - float(stats.order_min)


def _temporal_mean(strategy: Strategy, stats: LogStats) -> tuple[float, bool]:
    """Mean of exp(s·u) over the log, and whether it is exact (else: the even-spread assumption).

    With rows spread evenly over the order span, u is uniform on [0, 1] and the mean is
    ``(e^s − 1) / s`` (1 at s = 0). A zero span puts every row at u = 1 (mean e^s), which
    makes the strategy uniform, as it should be.
    """
    s = strategy.recency_strength
    if stats.weight_mean is not None:
        if stats.weight_strength != s:
            raise ValueError(f"LogStats.weight_mean was computed for recency_strength={stats.weight_strength}, "
                             f"but the strategy uses {s}")
        return stats.weight_mean, True
    if _span(stats) <= 0:
        return math.exp(s), True
    return (math.expm1(s) / s if s > 0 else 1.0), False


def _recent_share(strategy: Strategy, stats: LogStats) -> tuple[float, bool]:
    """Share of the log in the recent span, and whether it is exact (else: even spread ⇒ recent_fraction)."""
    f = strategy.recent_fraction
    if stats.recent_share is not None:
        if stats.recent_fraction != f:
            raise ValueError(f"LogStats.recent_share was computed for recent_fraction={stats.recent_fraction}, "
                             f"but the strategy uses {f}")
        return stats.recent_share, True
    if _span(stats) <= 0:
        return 1.0, True
    return f, False


def _biased_lambdas(strategy: Strategy, stats: LogStats) -> tuple[float, float]:
    """(λ+, λ−): expected copies of a positive and of a negative row.

    Chosen so that positives·λ+ = budget·rows·target and negatives·λ− = budget·rows·(1 − target):
    the expected output has ``budget × rows`` rows at the target positive rate.
    """
    if stats.positives == 0 or stats.positives == stats.rows:
        raise ValueError(f"biased sampling needs both positives and negatives; LogStats has positives="
                         f"{stats.positives} of rows={stats.rows}")
    n_out = strategy.budget * stats.rows
    t = strategy.target_positive_rate
    return n_out * t / stats.positives, n_out * (1.0 - t) / (stats.rows - stats.positives)


# ---------------------------------------------------------------- per-row λ


def _recency(batch: pa.Table, stats: LogStats, order_column: str) -> np.ndarray:
    """u in [0, 1] per row: position in the order span (clipped, so stale stats cannot give u outside it)."""
    col = batch.column(order_column)
    if col.null_count:
        raise ValueError(f"order column {order_column!r} has {col.null_count} nulls: time-based sampling needs a "
                         "time for every row")
    t = col.to_numpy().astype(np.float64)
    span = _span(stats)
    if span <= 0:
        return np.ones(t.shape[0], dtype=np.float64)
    return np.clip((t - float(stats.order_min)) / span, 0.0, 1.0)


def _lambdas(strategy: Strategy, stats: LogStats, positive: np.ndarray | None, u: np.ndarray | None,
             n: int) -> np.ndarray:
    """Σ share_k · λ_k per row from the row's label (positive) and recency (u) arrays."""
    lam = np.zeros(n, dtype=np.float64)
    for kind, share in strategy.components():
        if kind == "random":
            lam += share * strategy.budget
        elif kind == "biased":
            assert positive is not None
            lam_pos, lam_neg = _biased_lambdas(strategy, stats)
            lam += share * np.where(positive, lam_pos, lam_neg)
        elif kind == "temporal":
            assert u is not None
            mean, _ = _temporal_mean(strategy, stats)
            lam += share * strategy.budget * np.exp(strategy.recency_strength * u) / mean
        else:  # recent
            assert u is not None
            frac, _ = _recent_share(strategy, stats)
            lam += share * np.where(u >= 1.0 - strategy.recent_fraction, strategy.budget / frac, 0.0)
    return lam


def expected_counts(batch: pa.Table, strategy: Strategy, stats: LogStats, order_column: str) -> np.ndarray:
    """Expected copies λ_i of each row, normalised so Σ over the whole log is ``budget × stats.rows``.

    - random: λ = budget.
    - biased: λ+ = budget·rows·target/positives for positives (label ≠ 0),
      λ− = budget·rows·(1 − target)/(rows − positives) for negatives.
    - temporal: λ = budget·exp(s·u)/mean, where mean = (e^s − 1)/s assumes rows spread evenly
      over the order span; pass an exact ``LogStats.weight_mean`` (see :func:`weight_sum`) when
      they are not (bursty traffic, or ``row_id`` ordering with file-index high bits).
    - recent: λ = budget/recent_fraction for rows with u ≥ 1 − recent_fraction, 0 otherwise
      (same caveat; exact share via ``LogStats.recent_share``).
    - mixture: Σ share_k · λ_k.

    λ depends only on the row's own label and order value and on ``stats``, never on the
    batch, so any split of the log into blocks gives the same λ. ``order_column`` is read
    only by the time-based kinds.
    """
    n = batch.num_rows
    positive = batch.column(LABEL).to_numpy() != 0 if strategy.uses_label else None
    u = _recency(batch, stats, order_column) if strategy.uses_time else None
    return _lambdas(strategy, stats, positive, u, n)


def weight_sum(batch: pa.Table, strategy: Strategy, stats: LogStats, order_column: str,
               kind: Literal["temporal", "recent"] | None = None) -> float:
    """Map step of an exact time normaliser: this batch's sum of unnormalised time weights.

    ``kind`` defaults to the strategy's own kind; for a mixture name the component
    (``"temporal"``: Σ exp(recency_strength · u); ``"recent"``: the number of rows with
    u ≥ 1 − recent_fraction). Only ``stats.order_min``/``order_max`` are used. Sum the
    results over the dataset and pass the total to :func:`with_exact_normalisers`, e.g.::

        total = ds.map_batches(lambda b: pa.table({"w": [weight_sum(b, st, stats, col)]}),
                               batch_format="pyarrow").sum("w")
        stats = with_exact_normalisers(stats, st, temporal=total)
    """
    kind = kind or strategy.kind  # type: ignore[assignment]
    if kind not in TIME_KINDS:
        raise ValueError(f"weight_sum kind={kind!r}: expected one of {TIME_KINDS} "
                         "(for a mixture, name the time-based component)")
    u = _recency(batch, stats, order_column)
    if kind == "temporal":
        return float(np.exp(strategy.recency_strength * u).sum())
    return float(np.count_nonzero(u >= 1.0 - strategy.recent_fraction))


def with_exact_normalisers(stats: LogStats, strategy: Strategy, temporal: float | None = None,
                           recent: float | None = None) -> LogStats:
    """``stats`` with exact time normalisers from dataset-wide sums of :func:`weight_sum`.

    ``temporal``: total Σ exp(s·u); ``recent``: total rows in the recent span. Each is
    recorded with the strategy parameter it belongs to.
    """
    out = stats
    if temporal is not None:
        out = replace(out, weight_mean=temporal / stats.rows, weight_strength=strategy.recency_strength)
    if recent is not None:
        out = replace(out, recent_share=recent / stats.rows, recent_fraction=strategy.recent_fraction)
    return out


# ---------------------------------------------------------------- the map_batches step


def _poisson_counts(u: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Poisson(λ) draws by inverting the CDF at the given uniforms (count = smallest k with F(k) ≥ u).

    The same arithmetic as ``scipy.stats.poisson.ppf`` (a continuous inverse, then a one-step
    check against the CDF), written on ``scipy.special`` because importing ``scipy.stats``
    costs each Ray worker about a second. Rows with u ≤ P(0) = e^{−λ} draw 0 without the
    (slow) inverse; that is most rows at small budgets.
    """
    counts = np.zeros(u.shape[0], dtype=np.int64)
    hit = u > np.exp(-lam)
    if hit.any():
        q, mu = u[hit], lam[hit]
        k = np.ceil(special.pdtrik(q, mu))
        below = np.maximum(k - 1, 0)
        counts[hit] = np.where(special.pdtr(below, mu) >= q, below, k).astype(np.int64)
    return counts


def strategic_sample(batch: pa.Table, strategy: Strategy, stats: LogStats, order_column: str, seed: int) -> pa.Table:
    """Sample a batch with replacement: row i appears Poisson(λ_i) times (a ``map_batches`` step).

    The Poisson draw inverts the CDF at ``row_uniform(row_id, seed)``, so the same rows and
    copy counts come out whatever the block layout. Use a seed not shared with other
    samplers applied to the same log (the coins would be correlated).

    Output columns:

    - every input column, each kept row repeated ``count`` times; ``row_id`` stays the
      original id, so anything downstream that hashes by row id (``model_sample``, split
      assignment) treats all copies of a row alike;
    - ``copy`` (int32): 0 .. count − 1, so duplicates are distinguishable ((row_id, copy) is unique);
    - ``sample_rate`` (float32): the input's rate (1.0 where the column is absent) times λ_i
      for every copy of row i. It then holds the expected number of copies of that row per
      row of the original (pre-down-sampling) population, i.e. the relative sampling rate a
      debias correction needs (e.g. negatives vs positives: λ−/λ+ for ``biased``). It is not
      a probability and may exceed 1.

    Raises ValueError on a batch that already has a ``copy`` column (sampling twice would
    make (row_id, copy) ambiguous).
    """
    if COPY in batch.column_names:
        raise ValueError(f"batch already has a {COPY!r} column: strategic_sample would make (row_id, copy) "
                         "ambiguous; apply it once")
    lam = expected_counts(batch, strategy, stats, order_column)
    counts = _poisson_counts(row_uniform(batch.column(ROW_ID).to_numpy(), seed), lam)
    idx = np.repeat(np.arange(batch.num_rows, dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    copy = np.arange(idx.shape[0], dtype=np.int64) - np.repeat(starts, counts)
    if SAMPLE_RATE in batch.column_names:
        rates = batch.column(SAMPLE_RATE).to_numpy().astype(np.float64)
    else:
        rates = np.ones(batch.num_rows, dtype=np.float64)
    out = batch.take(pa.array(idx, type=pa.int64()))
    rate_col = pa.array((rates * lam)[idx].astype(np.float32), type=pa.float32())
    if SAMPLE_RATE in out.column_names:
        out = out.set_column(out.schema.get_field_index(SAMPLE_RATE), SAMPLE_RATE, rate_col)
    else:
        out = out.append_column(SAMPLE_RATE, rate_col)
    return out.append_column(COPY, pa.array(copy.astype(np.int32), type=pa.int32()))


# ---------------------------------------------------------------- reporting


def _component_report(kind: str, strategy: Strategy, stats: LogStats) -> dict[str, object]:
    if kind == "random":
        return {"lambda": float(strategy.budget)}
    if kind == "biased":
        lam_pos, lam_neg = _biased_lambdas(strategy, stats)
        return {"positive_rate_in": stats.positive_rate, "positive_rate_out": strategy.target_positive_rate,
                "lambda_pos": lam_pos, "lambda_neg": lam_neg, "negative_keep_rate": lam_neg / lam_pos}
    if kind == "temporal":
        mean, exact = _temporal_mean(strategy, stats)
        s = strategy.recency_strength
        return {"recency_strength": s, "weight_mean": mean, "normaliser": "exact" if exact else "uniform-time",
                "lambda_oldest": strategy.budget / mean, "lambda_newest": strategy.budget * math.exp(s) / mean}
    frac, exact = _recent_share(strategy, stats)
    return {"recent_fraction": strategy.recent_fraction, "recent_share": frac,
            "normaliser": "exact" if exact else "uniform-time", "lambda_recent": strategy.budget / frac,
            "lambda_outside": 0.0}


def describe(strategy: Strategy, stats: LogStats) -> dict[str, object]:
    """The sampling rates to record for debias and reports (plain floats, JSON-ready).

    Always: kind, budget, rows_in, expected_rows_out, positive_rate_in, the λ range
    (lambda_min/lambda_max over labels and recency), and positive_rate_out (exact when λ
    depends on the label only; otherwise it assumes labels independent of time, flagged by
    ``positive_rate_out_exact``). ``negative_keep_rate`` = λ−/λ+, the negatives' rate
    relative to positives that a negative-down-sampling debias needs
    (``SamplingCorrection.from_negative_keep_rate`` takes it when ≤ 1), is given when it is
    the same for every row; when it varies with time (a mixture of biased and a time-based
    kind) ``negative_keep_rate_range`` is given instead and only the per-row ``sample_rate``
    is exact. Each component's own rates are under ``components`` (kind → dict with share).
    """
    corners_pos = np.array([False, False, True, True])
    corners_u = np.array([0.0, 1.0, 0.0, 1.0])  # every λ_k is non-decreasing in u: extremes at u ∈ {0, 1}
    lam = _lambdas(strategy, stats, corners_pos, corners_u, 4)
    comps = {kind: {"share": share, **_component_report(kind, strategy, stats)}
             for kind, share in strategy.components()}
    pos_out = sum(share * (strategy.target_positive_rate if kind == "biased" else stats.positive_rate)
                  for kind, share in strategy.components())
    report: dict[str, object] = {
        "kind": strategy.kind,
        "budget": float(strategy.budget),
        "rows_in": stats.rows,
        "expected_rows_out": strategy.budget * stats.rows,
        "positive_rate_in": stats.positive_rate,
        "positive_rate_out": float(pos_out),
        "positive_rate_out_exact": not strategy.uses_time,
        "lambda_min": float(lam.min()),
        "lambda_max": float(lam.max()),
    }
    ratios = [lam[i] / lam[i + 2] for i in (0, 1) if lam[i + 2] > 0]  # negative / positive at u = 0 and u = 1
    if ratios and max(ratios) - min(ratios) <= 1e-12 * max(ratios):
        report["negative_keep_rate"] = float(ratios[0])
    elif ratios:
        report["negative_keep_rate_range"] = [float(min(ratios)), float(max(ratios))]
    if strategy.kind == "mixture":
        report["components"] = comps
    else:
        report.update({k: v for k, v in comps[strategy.kind].items() if k != "share"})
    return report
