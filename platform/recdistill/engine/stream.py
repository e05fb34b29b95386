"""The distill stream: the students' window joined with the teacher's logits once, by
row id (``signals.join``), materialised in the object store; every student group reads it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pyarrow as pa

from recdistill.data.reduce import reduce_blocks
from recdistill.data.windows import HISTORY, STUDENT_WINDOW, WINDOW
from recdistill.engine.ray_run import RayRun
from recdistill.signals.join import coverage, join_signals


def window_rows(batch: pa.Table, window: int) -> pa.Table:
    return batch.filter(pa.compute.equal(batch.column(WINDOW), window))


def sum_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def students_window(run: RayRun) -> Any:
    """The train split's rows of the students' window (lazy)."""
    return run.train_ds.map_batches(window_rows, batch_format="pyarrow", fn_kwargs={"window": STUDENT_WINDOW})


def materialised_with_coverage(ds: Any) -> tuple[Any, dict[str, int]]:
    """A stream whose rows carry the teacher's logit, materialised, with its coverage (rows,
    rows with a signal)."""
    stream = ds.materialize()
    return stream, reduce_blocks(stream, coverage, sum_counts) or {"rows": 0, "with_signal": 0}


def distill_stream(run: RayRun, log: Callable[[str], None], timings: dict[str, float]) -> tuple[Any, dict[str, int]]:
    """The window's rows joined with the teacher's logits once, by row id, materialised in
    the object store; with its coverage (rows, rows with a signal)."""
    import ray

    t0 = time.perf_counter()
    # every window the teacher recorded: a stored teacher may have been cut elsewhere (the
    # key holds no history_fraction where it cannot change the teacher), and the join takes
    # only the blocks whose row ids overlap the students' rows
    blocks = []
    for w in (HISTORY, STUDENT_WINDOW):
        got = ray.get(run.hub.wait.remote(run.signal_id, 0, w, 600.0))
        if got is None:
            raise RuntimeError(f"teacher {run.signal_id}: window {w} signals not complete after 600 s")
        blocks += got
    stream, cov = materialised_with_coverage(
        students_window(run).map_batches(join_signals, batch_format="pyarrow",
                                         fn_kwargs={"store_uri": run.store.uri, "blocks": blocks}))
    timings["stream_s"] = time.perf_counter() - t0
    log(f"[stream] window rows joined with teacher signals: {cov['rows']:,} rows, "
        f"{cov['with_signal']:,} with a signal ({cov['rows'] - cov['with_signal']:,} without: the aux loss is "
        f"masked there), {timings['stream_s']:.1f} s")
    return stream, cov
