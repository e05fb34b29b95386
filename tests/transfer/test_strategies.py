"""Strategic offline sampling: budgets, rebalancing, recency, block-layout determinism, rates."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recdistill.transfer.strategies import (
    COPY,
    LogStats,
    Strategy,
    describe,
    expected_counts,
    strategic_sample,
    weight_sum,
    with_exact_normalisers,
)
from recdistill.transfer.strategies import _poisson_counts

T0 = 1_600_000_000
KINDS = ("random", "biased", "temporal", "recent", "mixture")


def _log(n: int, positive_rate: float = 0.05, seed: int = 0) -> pa.Table:
    """A log with an exact share of positives at random places, times evenly spread over the span."""
    rng = np.random.default_rng(seed)
    label = np.zeros(n, dtype=np.int8)
    label[rng.permutation(n)[: round(n * positive_rate)]] = 1
    return pa.table({"row_id": pa.array(np.arange(n, dtype=np.int64)),
                     "label": pa.array(label),
                     "ts": pa.array(T0 + 10 * np.arange(n, dtype=np.int64)),
                     "x": pa.array(rng.random(n).astype(np.float32))})


def _stats(t: pa.Table) -> LogStats:
    ts = t.column("ts").to_numpy()
    return LogStats(rows=t.num_rows, positives=int(t.column("label").to_numpy().sum()),
                    order_min=float(ts.min()), order_max=float(ts.max()))


def _u(t: pa.Table, stats: LogStats) -> np.ndarray:
    return (t.column("ts").to_numpy() - stats.order_min) / (stats.order_max - stats.order_min)


def _pairs(t: pa.Table) -> list[tuple[int, int]]:
    return sorted(zip(t.column("row_id").to_pylist(), t.column(COPY).to_pylist()))


@pytest.fixture(scope="module")
def log100k() -> tuple[pa.Table, LogStats]:
    t = _log(100_000)
    return t, _stats(t)


@pytest.mark.parametrize("kind", KINDS)
def test_output_size_meets_the_budget(kind: str, log100k: tuple[pa.Table, LogStats]) -> None:
    t, stats = log100k
    st = Strategy(kind=kind, budget=0.3)  # type: ignore[arg-type]
    lam = expected_counts(t, st, stats, "ts")
    assert lam.sum() == pytest.approx(0.3 * t.num_rows, rel=1e-3)  # even spread: uniform normaliser ≈ exact
    out = strategic_sample(t, st, stats, "ts", seed=11)
    assert out.num_rows == pytest.approx(0.3 * t.num_rows, rel=0.03)


def test_biased_rebalances_with_replacement(log100k: tuple[pa.Table, LogStats]) -> None:
    t, stats = log100k
    st = Strategy(kind="biased", budget=0.5, target_positive_rate=0.5)
    out = strategic_sample(t, st, stats, "ts", seed=3)
    assert out.column("label").to_numpy().mean() == pytest.approx(0.5, abs=0.01)
    copies = out.column(COPY).to_numpy()
    assert copies.max() > 0 and out.column(COPY).type == pa.int32()
    assert len(set(_pairs(out))) == out.num_rows  # (row_id, copy) is unique
    d = describe(st, stats)
    assert d["lambda_pos"] == pytest.approx(0.5 * 0.5 / 0.05)
    assert d["lambda_neg"] == pytest.approx(0.5 * 0.5 / 0.95)
    assert d["negative_keep_rate"] == pytest.approx(0.05 / 0.95)
    assert d["positive_rate_out"] == 0.5 and d["positive_rate_out_exact"] is True


def test_temporal_favours_recent_rows_and_recent_keeps_only_the_span(log100k: tuple[pa.Table, LogStats]) -> None:
    t, stats = log100k
    out = strategic_sample(t, Strategy(kind="temporal", budget=0.3), stats, "ts", seed=5)
    assert _u(out, stats).mean() > _u(t, stats).mean() + 0.1
    recent = Strategy(kind="recent", budget=0.3, recent_fraction=0.25)
    out = strategic_sample(t, recent, stats, "ts", seed=5)
    assert _u(out, stats).min() >= 0.75
    d = describe(recent, stats)
    assert d["lambda_recent"] == pytest.approx(1.2) and d["lambda_min"] == 0.0


def test_exact_normalisers_from_weight_sums() -> None:
    """Bursty time: the uniform assumption misses the budget, the exact map/reduce normaliser meets it."""
    t = _log(20_000)
    ts = T0 + (np.sqrt(np.linspace(0, 1, t.num_rows)) * 1e6).astype(np.int64)  # rows crowd the recent end
    t = t.set_column(t.schema.get_field_index("ts"), "ts", pa.array(ts))
    stats = _stats(t)
    st = Strategy(kind="mixture", budget=0.4, mixture=(("temporal", 0.6), ("recent", 0.4)))
    assert expected_counts(t, st, stats, "ts").sum() > 1.1 * 0.4 * t.num_rows
    parts = [t.slice(i, 3_000) for i in range(0, t.num_rows, 3_000)]
    temporal = sum(weight_sum(b, st, stats, "ts", kind="temporal") for b in parts)
    recent = sum(weight_sum(b, st, stats, "ts", kind="recent") for b in parts)
    exact = with_exact_normalisers(stats, st, temporal=temporal, recent=recent)
    assert expected_counts(t, st, exact, "ts").sum() == pytest.approx(0.4 * t.num_rows, rel=1e-9)
    assert describe(st, exact)["components"]["temporal"]["normaliser"] == "exact"  # type: ignore[index]
    with pytest.raises(ValueError, match="recency_strength"):
        expected_counts(t, Strategy(kind="temporal", budget=0.4, recency_strength=1.0), exact, "ts")


def test_mixture_meets_the_budget_and_reports_components(log100k: tuple[pa.Table, LogStats]) -> None:
    t, stats = log100k
    st = Strategy(kind="mixture", budget=0.2)
    out = strategic_sample(t, st, stats, "ts", seed=8)
    assert out.num_rows == pytest.approx(0.2 * t.num_rows, rel=0.03)
    d = describe(st, stats)
    assert set(d["components"]) == {"biased", "temporal"}  # type: ignore[arg-type]
    assert d["expected_rows_out"] == pytest.approx(0.2 * t.num_rows)
    lo, hi = d["negative_keep_rate_range"]  # type: ignore[misc]
    assert 0 < lo < hi < 1 and "negative_keep_rate" not in d


def test_poisson_counts_invert_the_poisson_cdf() -> None:
    from scipy.stats import poisson

    rng = np.random.default_rng(0)
    lam = 10 ** rng.uniform(-6, 2.5, 20_000)
    u = rng.random(lam.size)
    u[:100] = 1 - 2**-53
    counts = _poisson_counts(u, lam)
    np.testing.assert_array_equal(counts, np.maximum(poisson.ppf(u, lam), 0))
    lam = np.full(200_000, 0.7)
    counts = _poisson_counts(rng.random(lam.size), lam)
    assert counts.mean() == pytest.approx(0.7, rel=0.01) and counts.var() == pytest.approx(0.7, rel=0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_same_rows_and_copies_whatever_the_block_layout(kind: str) -> None:
    t = _log(14_000)
    stats = _stats(t)
    st = Strategy(kind=kind, budget=0.7)  # type: ignore[arg-type]
    whole = strategic_sample(t, st, stats, "ts", seed=21)
    size = -(-t.num_rows // 7)
    parts = pa.concat_tables([strategic_sample(t.slice(i, size), st, stats, "ts", seed=21)
                              for i in range(0, t.num_rows, size)])
    assert _pairs(whole) == _pairs(parts)
    other = strategic_sample(t, st, stats, "ts", seed=22)
    assert _pairs(other) != _pairs(whole)


def test_sample_rate_is_lambda_times_the_input_rate() -> None:
    t = _log(20_000)
    stats = _stats(t)
    st = Strategy(kind="mixture", budget=0.5)
    lam = expected_counts(t, st, stats, "ts")
    out = strategic_sample(t, st, stats, "ts", seed=1)
    ids = out.column("row_id").to_numpy()
    assert out.column("sample_rate").type == pa.float32()
    np.testing.assert_allclose(out.column("sample_rate").to_numpy(), lam[ids], rtol=1e-6)
    # A log that was already down-sampled carries its rate into the product.
    rate_in = np.where(t.column("label").to_numpy() == 1, 1.0, 0.25).astype(np.float32)
    out = strategic_sample(t.append_column("sample_rate", pa.array(rate_in)), st, stats, "ts", seed=1)
    ids = out.column("row_id").to_numpy()
    np.testing.assert_allclose(out.column("sample_rate").to_numpy(), rate_in[ids] * lam[ids], rtol=1e-6)
    assert out.schema.names.count("sample_rate") == 1
    with pytest.raises(ValueError, match="copy"):
        strategic_sample(out, st, stats, "ts", seed=2)


def test_empty_batch_keeps_the_output_schema() -> None:
    t = _log(100)
    stats = _stats(t)
    out = strategic_sample(t.slice(0, 0), Strategy(kind="temporal", budget=0.5), stats, "ts", seed=0)
    assert out.num_rows == 0 and out.schema.field("sample_rate").type == pa.float32()
    assert out.schema.field(COPY).type == pa.int32()


@pytest.mark.parametrize("kwargs, field", [
    ({"kind": "random", "budget": 0.0}, "budget"),
    ({"kind": "random", "budget": -1.0}, "budget"),
    ({"kind": "random", "budget": float("nan")}, "budget"),
    ({"kind": "uniform", "budget": 0.1}, "kind"),
    ({"kind": "mixture", "budget": 0.1, "mixture": (("biased", 0.5), ("temporal", 0.4))}, "sum to 1"),
    ({"kind": "mixture", "budget": 0.1, "mixture": (("mixture", 1.0),)}, "mixture kinds"),
    ({"kind": "biased", "budget": 0.1, "target_positive_rate": 1.0}, "target_positive_rate"),
    ({"kind": "temporal", "budget": 0.1, "recency_strength": -1.0}, "recency_strength"),
    ({"kind": "recent", "budget": 0.1, "recent_fraction": 0.0}, "recent_fraction"),
])
def test_validation_names_the_bad_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Strategy(**kwargs)


def test_stats_validation_and_biased_needs_both_labels() -> None:
    with pytest.raises(ValueError, match="positives"):
        LogStats(rows=10, positives=11, order_min=0, order_max=1)
    with pytest.raises(ValueError, match="order_min"):
        LogStats(rows=10, positives=1, order_min=2, order_max=1)
    t = _log(100, positive_rate=0.0)
    with pytest.raises(ValueError, match="positives and negatives"):
        expected_counts(t, Strategy(kind="biased", budget=0.1), _stats(t), "ts")
