"""Materialised datasets keep their blocks' order when tasks finish out of order: the
students' stream and the held-out splits are read in that order, so a run's numbers would
otherwise change with the tasks' timing. (A plain ``materialize()`` of the same dataset, with
warm workers, gave [1, 0, 4, 5, 2, 6, 3, 7] and [1, 2, 0, 5, 6, 7, 3, 4] in two of three tries.)"""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

pytestmark = pytest.mark.timeout(120)


def _slow_first_block(batch: pa.Table) -> pa.Table:
    if batch.column("id")[0].as_py() == 0:
        time.sleep(1.0)  # the first block's task finishes after the others
    return batch


def _ids(ds) -> list[int]:
    return [r["id"] for r in ds.take_all()]


def test_blocks_that_finish_out_of_order_stay_in_order(ray_local: None) -> None:
    import ray

    from recdistill.data.in_order import materialize_in_order
    from recdistill.engine.stream import materialised_with_coverage
    from recdistill.signals.join import LOGIT

    def late() -> ray.data.Dataset:
        # a quarter CPU each: all eight tasks run at once, on workers started beforehand
        return ray.data.range(8, override_num_blocks=8).map_batches(
            _slow_first_block, batch_format="pyarrow", batch_size=None, num_cpus=0.25)

    ray.data.range(8, override_num_blocks=8).map_batches(lambda b: b, batch_format="pyarrow",
                                                         num_cpus=0.25).materialize()
    for _ in range(2):
        ds = late()
        held = materialize_in_order(ds)
        assert _ids(held) == list(range(8))
        assert ds.context.execution_options.preserve_order is False  # the dataset's own setting is back
        assert held.context.execution_options.preserve_order is False
        stream, cov = materialised_with_coverage(late().map_batches(
            lambda b: b.append_column(LOGIT, pa.array([0.0] * b.num_rows)), batch_format="pyarrow"))
        assert _ids(stream) == list(range(8)) and cov["rows"] == 8
