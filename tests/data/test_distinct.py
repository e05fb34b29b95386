import numpy as np
import pyarrow as pa
import pytest

from recdistill.data.distinct import estimate, registers


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 50_000])
def test_small_and_medium_cardinalities(n: int) -> None:
    vals = pa.array([f"{i:08x}" for i in range(n)] * 2 + [None])
    assert estimate(registers(vals)) == pytest.approx(n, rel=0.03, abs=0.5)


def test_large_cardinality_and_exact_merge() -> None:
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 1 << 62, 400_000)
    whole = registers(pa.array(vals))
    merged = np.maximum(registers(pa.array(vals[:250_000])), registers(pa.array(vals[150_000:])))
    assert np.array_equal(whole, merged)  # merging block sketches loses nothing
    assert estimate(whole) == pytest.approx(400_000, rel=0.03)
