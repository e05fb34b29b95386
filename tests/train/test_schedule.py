"""The default schedule rule (train/schedule.py) and how sizing.resolve applies it."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from recdistill.config import ConfigError, load_config
from recdistill.sizing import TrainStats, describe, field_buckets, resolve
from recdistill.train.plan import recent_cuts, student_init_seed, student_rows, student_sample_seed
from recdistill.train.schedule import MAX_BATCH, MIN_BATCH, default_schedule


def test_rule_at_the_ends_of_the_range() -> None:
    small = default_schedule(50_000, has_valid=True)
    assert (small.batch_size, small.epochs, small.eval_every, small.patience) == (128, 10, 0, 2)
    assert small.steps_per_pass(50_000) == 391  # not the 12 steps of one 4096-row batch per pass
    big = default_schedule(100_000_000, has_valid=True)
    assert (big.batch_size, big.epochs) == (4096, 1)
    assert big.eval_every == 0  # validated after its pass, never restored to a point inside it
    assert default_schedule(50_000, has_valid=False).patience == 0  # nothing to stop on


@given(st.integers(1, 10**9), st.integers(1, 10**9))
def test_rule_is_monotone_and_bounded(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    s_lo, s_hi = default_schedule(lo, True), default_schedule(hi, True)
    assert MIN_BATCH <= s_lo.batch_size <= s_hi.batch_size <= MAX_BATCH
    assert s_lo.epochs >= s_hi.epochs >= 1
    assert s_lo.batch_size & (s_lo.batch_size - 1) == 0  # a power of two


def _cfg(*overrides: str):
    return load_config(None, ["data.source=criteo", "data.path=/x.txt", *overrides])


def test_resolve_sizes_buckets_and_keeps_what_was_set() -> None:
    cfg = _cfg("teacher.epochs=3", "students.0.batch_size=64", "data.hash_buckets=50000")
    stats = TrainStats(train_rows=40_000, positives=10_000, valid_rows=5_000,
                       distinct={"C1": 3, "C2": 1_000, "C3": 30_000})
    out, derived = resolve(cfg, stats)
    # 2 × distinct + the 2 reserved codes, at least 1024, at most hash_buckets
    assert out.data.buckets == {"C1": 1024, "C2": 2002, "C3": 50_000} == field_buckets(cfg, stats.distinct)
    assert out.teacher.epochs == 3 and out.teacher.batch_size == 128 and out.teacher.eval_every == 0
    auto_teacher, _ = resolve(_cfg(), stats)  # one pass: its first pass is what the students learn from
    assert auto_teacher.teacher.epochs == 1 and auto_teacher.teacher.eval_every == 0
    s = out.students[0]
    assert s.batch_size == 64 and s.epochs == 10 and s.patience == 2 and s.lr == 1e-2 and s.embedding_lr == 1e-3
    assert derived["students"]["student"]["rows"] == 20_000  # sampling_ratio 0.5 of the train split
    assert derived["teacher"]["auto"] == ["batch_size", "eval_every", "patience", "lr", "embedding_lr"]
    assert any("C3 30,000→50,000" in line for line in describe(derived))


def test_resolve_counts_negative_down_sampling() -> None:
    cfg = _cfg("students.0.negative_keep_rate=0.1", "teacher.epochs=1")
    out, derived = resolve(cfg, TrainStats(train_rows=1_000_000, positives=100_000, valid_rows=0))
    # half the split: 50k positives + 10% of 450k negatives
    assert derived["students"]["student"]["rows"] == 95_000
    assert out.teacher.eval_every == 0 and out.teacher.patience == 0
    assert out.data.buckets == "max"  # nothing measured: every field keeps hash_buckets


def test_sampling_ratio_is_a_share_of_the_train_split() -> None:
    cfg = _cfg("teacher.history_fraction=0.6", "students.0.sampling_ratio=0.2", "students.1.name=b",
               "students.1.sampling_ratio=0.4", "students.1.rows=recent", "students.2.name=c",
               "students.2.sampling_ratio=0.1", "students.2.rows=recent")
    assert student_rows(cfg, 0) == (pytest.approx(0.5), 0)  # 0.2 of the split = half the 0.4 window
    assert recent_cuts(cfg) == [0.6, 0.9]
    assert student_rows(cfg, 1) == (1.0, 1) and student_rows(cfg, 2) == (1.0, 2)
    with pytest.raises(ConfigError, match=r"students\.0\.sampling_ratio=0\.6 .* at most 0\.5"):
        _cfg("students.0.sampling_ratio=0.6")
    with pytest.raises(ConfigError, match="recent rows are a batch-experiment choice"):
        _cfg("students.0.rows=recent", "stream.enabled=true")


def test_student_seeds_follow_the_name_not_the_position() -> None:
    ab = _cfg("students.0.name=a", "students.1.name=b")
    ba = _cfg("students.0.name=b", "students.1.name=a")
    for seed in (student_init_seed, student_sample_seed):
        assert seed(ab, 0) == seed(ba, 1) and seed(ab, 1) == seed(ba, 0) and seed(ab, 0) != seed(ab, 1)
    packed = _cfg("students.0.name=t000", "students.0.seed_name=a")
    assert student_init_seed(packed, 0) == student_init_seed(ab, 0)


def test_bucket_mapping_is_checked() -> None:
    assert _cfg("data.buckets={C1: 100}").data.buckets == {"C1": 100}
    with pytest.raises(ConfigError, match="at least 2 buckets"):
        _cfg("data.buckets={C1: 1}")
    with pytest.raises(ConfigError, match="data.buckets"):
        _cfg("data.buckets=[1, 2]")
