"""Row sampling as pure batch functions, reproducible whatever the block layout.

Each row's coin is a hash of (seed, row_id), not a draw from a stream, so the same rows
are kept whether a log is read as one block or as a thousand shards on a cluster, and
two samplers with different seeds are independent.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recdistill.data.schema import LABEL, ROW_ID, SAMPLE_RATE

_GOLDEN_INT = 0x9E3779B97F4A7C15
_GOLDEN = np.uint64(_GOLDEN_INT)
_MASK = (1 << 64) - 1


def row_uniform(row_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform in [0, 1) per row id (splitmix64 finaliser of id ^ hashed seed)."""
    x = row_ids.astype(np.uint64) ^ np.uint64((seed * _GOLDEN_INT) & _MASK)
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def hash_part(values: np.ndarray, parts: int, seed: int) -> np.ndarray:
    """The part in [0, parts) of each int64 value by its hash: about equal parts, the same on
    every run and block layout (cross-fitting's folds, a committee's hash slices)."""
    return np.minimum((row_uniform(values.astype(np.int64), seed) * parts).astype(np.int64), parts - 1)


def model_sample_mask(row_ids: np.ndarray, labels: np.ndarray, ratio: float, negative_keep: float,
                      seed: int) -> np.ndarray:
    """Rows one model trains on: a uniform share, then its own extra negative down-sampling.

    A pure function of (row id, label, seed): the single-process experiment, the teacher's
    Ray Data filter and each student inside a shared pass all pick the same rows.
    """
    keep = row_uniform(row_ids, seed) < ratio
    if negative_keep < 1.0:
        keep &= (labels != 0) | (row_uniform(row_ids, seed + 7919) < negative_keep)
    return keep


def model_sample(batch: pa.Table, ratio: float, negative_keep: float, seed: int) -> pa.Table:
    """``model_sample_mask`` as a ``map_batches`` step."""
    keep = model_sample_mask(batch.column(ROW_ID).to_numpy(), batch.column(LABEL).to_numpy(), ratio,
                             negative_keep, seed)
    return batch if keep.all() else batch.filter(pa.array(keep))


def _rates(batch: pa.Table) -> np.ndarray:
    if SAMPLE_RATE in batch.column_names:
        return batch.column(SAMPLE_RATE).to_numpy().astype(np.float32)
    return np.ones(batch.num_rows, dtype=np.float32)


def _with_rates(batch: pa.Table, keep: np.ndarray, rates: np.ndarray) -> pa.Table:
    out = batch.filter(pa.array(keep))
    col = pa.array(rates[keep].astype(np.float32))
    if SAMPLE_RATE in out.column_names:
        return out.set_column(out.schema.get_field_index(SAMPLE_RATE), SAMPLE_RATE, col)
    return out.append_column(SAMPLE_RATE, col)


def negative_downsample(batch: pa.Table, keep_rate: float, seed: int) -> pa.Table:
    """Keep every positive and each negative with probability ``keep_rate``.

    ``sample_rate`` is multiplied by the keep probability of the row, so a log that was
    already down-sampled (the synthetic one, or a production log) carries its total rate.
    """
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"negative keep rate must be in (0, 1], got {keep_rate}")
    y = batch.column(LABEL).to_numpy().astype(bool)
    u = row_uniform(batch.column(ROW_ID).to_numpy(), seed)
    keep = y | (u < keep_rate)
    rates = _rates(batch) * np.where(y, 1.0, keep_rate).astype(np.float32)
    return _with_rates(batch, keep, rates)


def uniform_sample(batch: pa.Table, ratio: float, seed: int) -> pa.Table:
    """Keep each row with probability ``ratio`` (positives and negatives alike).

    ``sample_rate`` is left as it is: a uniform sample does not change the relative keep
    rate of positives and negatives, which is all that the debias correction needs.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"sampling ratio must be in (0, 1], got {ratio}")
    keep = row_uniform(batch.column(ROW_ID).to_numpy(), seed) < ratio
    return batch.filter(pa.array(keep))


def student_row_mask(row_id: np.ndarray, label: np.ndarray, recency: np.ndarray | None, ratio: float,
                     negative_keep: float, seed: int, min_recency: int) -> np.ndarray:
    """Which rows of the students' window a student trains on: its seeded sample
    (``model_sample_mask``) and, for ``rows: recent``, only rows whose recency tag is at
    least ``min_recency`` (``train.plan.student_rows``). The local engine and the student
    groups both pick through here."""
    keep = model_sample_mask(row_id, label, ratio, negative_keep, seed)
    if min_recency:
        if recency is None:
            raise ValueError("rows: recent needs the recency tag (windows.tag_history) on the students' rows")
        keep &= recency >= min_recency
    return keep


_UNLABELLED_SEED = 104_729  # offsets a student's sample seed: its unlabelled rows' coins are independent


def unlabelled_row_mask(row_id: np.ndarray, labelled: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Rows a distilled student trains on without their labels: a seeded ``share`` of the
    rows outside its labelled sample ``labelled`` (``student_row_mask``). Row hashes, not
    labels, pick them, as a user would pick rows whose labels they do not have."""
    if share <= 0.0:
        return np.zeros(len(row_id), dtype=bool)
    return ~labelled & (row_uniform(row_id, seed + _UNLABELLED_SEED) < share)
