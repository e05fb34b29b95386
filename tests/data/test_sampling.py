import numpy as np
import pyarrow as pa
import pytest

from recdistill.data.sampling import negative_downsample, row_uniform, uniform_sample


def _log(n: int, ctr: float = 0.1, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"row_id": pa.array(np.arange(n, dtype=np.int64)),
                     "label": pa.array((rng.random(n) < ctr).astype(np.int8))})


def test_row_uniform_is_uniform_and_seeded() -> None:
    ids = np.arange(200_000)
    u = row_uniform(ids, 3)
    assert 0 <= u.min() and u.max() < 1
    assert np.histogram(u, bins=10, range=(0, 1))[0] == pytest.approx([20_000] * 10, rel=0.03)
    assert np.array_equal(u, row_uniform(ids, 3))
    assert abs(np.corrcoef(u, row_uniform(ids, 4))[0, 1]) < 0.01


def test_negative_downsampling_keeps_positives_and_records_rates() -> None:
    t = _log(100_000)
    out = negative_downsample(t, 0.25, seed=1)
    y_in, y_out = t.column("label").to_numpy(), out.column("label").to_numpy()
    rate = out.column("sample_rate").to_numpy()
    assert y_out.sum() == y_in.sum()
    assert (1 - y_out).sum() == pytest.approx(0.25 * (1 - y_in).sum(), rel=0.03)
    assert np.all(rate[y_out == 1] == 1.0) and np.allclose(rate[y_out == 0], 0.25)
    # Down-sampling an already down-sampled log multiplies the rates.
    twice = negative_downsample(out, 0.5, seed=2)
    r2 = twice.column("sample_rate").to_numpy()
    assert np.allclose(r2[twice.column("label").to_numpy() == 0], 0.125)


def test_sampling_does_not_depend_on_block_layout() -> None:
    t = _log(10_000)
    whole = negative_downsample(t, 0.3, seed=5).column("row_id").to_numpy()
    parts = [negative_downsample(t.slice(i, 1000), 0.3, seed=5).column("row_id").to_numpy()
             for i in range(0, 10_000, 1000)]
    assert np.array_equal(whole, np.concatenate(parts))
    uni = uniform_sample(t, 0.5, seed=9)
    assert uni.num_rows == pytest.approx(5000, rel=0.05) and "sample_rate" not in uni.column_names


def test_bad_rates_rejected() -> None:
    with pytest.raises(ValueError, match="keep rate"):
        negative_downsample(_log(10), 0.0, seed=0)
    with pytest.raises(ValueError, match="ratio"):
        uniform_sample(_log(10), 1.5, seed=0)
