"""``run.cold_users``: per-user window counts written as partials by the stream's blocks and
summed per test batch, never gathered on the driver (``engine.cold``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recdistill.config import ConfigError, load_config
from recdistill.engine.cold import COLD, mark_cold, user_rows, write_user_counts
from recdistill.signals.store import SignalStore


def test_a_users_window_rows_are_summed_over_every_blocks_partial(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "store"))
    d = f"{store.root}/cold_users/run"
    assert user_rows(np.array([1, 2]), store.uri, d).tolist() == [0, 0]  # nothing written yet
    # two blocks of the students' window: user 1 has 3 rows in all, user 2 one, user 3 two
    for users in ([1, 1, 2], [3, 1, 3]):
        out = write_user_counts(pa.table({"u": pa.array(users, pa.int64())}), store.uri, d, "u")
        assert out.column("rows").to_pylist() == [3]
    assert user_rows(np.array([3, 1, 9, 2, 1]), store.uri, d).tolist() == [2, 3, 0, 1, 3]
    marked = mark_cold(pa.table({"u": pa.array([1, 2, 3, 9], pa.int64())}), store.uri, d, "u", 2)
    assert marked.column(COLD).to_pylist() == [False, True, True, True]  # an unseen user is cold
    store.delete_dir(d)
    assert user_rows(np.array([1]), store.uri, d).tolist() == [0]


def test_cold_users_are_a_batch_ray_slice() -> None:
    assert load_config(None, ["run.cold_users=3"]).run.cold_users == 3
    for other in ("run.engine=local", "stream.enabled=true"):
        with pytest.raises(ConfigError, match="cold-user slice"):
            load_config(None, ["run.cold_users=3", other])
