"""The distill stream: the students' window joined with the teacher's logits once, by
row id (``signals.join``), materialised in the object store; every student group reads it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pyarrow as pa

from recdistill.data.in_order import materialize_in_order
from recdistill.data.reduce import reduce_blocks
from recdistill.data.windows import HISTORY, STUDENT_WINDOW, WINDOW
from recdistill.engine.ray_run import RayRun
from recdistill.signals.join import coverage, join_signals
from recdistill.data.tensors import REP
from recdistill.signals.kinds import LOGIT
from recdistill.signals.representations import join_representations, staleness, staleness_sums


def window_rows(batch: pa.Table, window: int) -> pa.Table:
    return batch.filter(pa.compute.equal(batch.column(WINDOW), window))


def sum_counts(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


_WITH = "with_signal:"  # stream_counts' key of a channel's rows with a signal


def stream_counts(batch: pa.Table, channels: tuple[str, ...] = (LOGIT,)) -> dict[str, float]:
    """A joined batch's coverage (rows with a signal in each of its teachers' ``channels``)
    and, where it carries the teacher's representations, the sums of their staleness: one
    pass over the stream gives both."""
    out: dict[str, float] = {"rows": batch.num_rows}
    for c in channels:
        out[_WITH + c] = coverage(batch, c)["with_signal"]
    if REP in batch.column_names:
        out.update({f"rep_{k}": v for k, v in staleness_sums(batch).items()})
    return out


def students_window(run: RayRun) -> Any:
    """The train split's rows of the students' window (lazy)."""
    return run.train_ds.map_batches(window_rows, batch_format="pyarrow", fn_kwargs={"window": STUDENT_WINDOW})


def materialised_with_coverage(ds: Any, channels: tuple[str, ...] = (LOGIT,)) -> tuple[Any, dict[str, Any]]:
    """A stream whose rows carry the teacher's logit, materialised, with its coverage (rows,
    rows with a signal; and the representations' staleness where it carries them). With
    several teachers' ``channels`` (packed seeds), ``with_signal`` is the first one's and
    ``by_channel`` has each one's."""
    stream = materialize_in_order(ds)
    counts = reduce_blocks(stream, stream_counts, sum_counts, {"channels": channels}) or {}
    by_channel = {c: int(counts.get(_WITH + c, 0)) for c in channels}
    cov: dict[str, Any] = {"rows": int(counts.get("rows", 0)), "with_signal": by_channel[channels[0]]}
    if len(channels) > 1:
        cov["by_channel"] = by_channel
    if any(k.startswith("rep_") for k in counts):
        cov["representations"] = staleness({k[4:]: v for k, v in counts.items() if k.startswith("rep_")})
    return stream, cov


def with_representations(ds: Any, run: RayRun, rep: dict[str, Any]) -> Any:
    """``ds`` with each row's teacher representations as of strictly before its time
    (``signals.representations``; ``rep``: the blocks and the layout). In batches of a signal
    block's rows: each batch reads the blocks' files once."""
    return ds.map_batches(join_representations, batch_format="pyarrow", batch_size=run.cfg.platform.signal_block_rows,
                          fn_kwargs={"store_uri": run.store.uri, **rep})


def distill_stream(run: RayRun, log: Callable[[str], None], timings: dict[str, float],
                   rep: dict[str, Any] | None = None,
                   channels: dict[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """The window's rows joined with the teacher's logits once, by row id (and with ``rep``,
    its representations), materialised in the object store; with its coverage (rows, rows
    with a signal). ``channels`` (column → signal id) joins several teachers' logits, each
    into its own column (the seeds of a packed run); by default the run's teacher's, as
    ``LOGIT``."""
    t0 = time.perf_counter()
    channels = channels or {LOGIT: run.signal_id}
    joined = students_window(run)
    for column, sid in channels.items():
        joined = joined.map_batches(join_signals, batch_format="pyarrow", fn_kwargs={
            "store_uri": run.store.uri, "blocks": _recorded_blocks(run, sid), "column": column})
    stream, cov = materialised_with_coverage(with_representations(joined, run, rep) if rep else joined,
                                             tuple(channels))
    if rep:
        r = cov["representations"]
        log(f"[stream] teacher representations found for {r['user']['found']:.1%} of rows' users (mean age "
            f"{r['user']['mean_age']:,.0f}), {r['item']['found']:.1%} of their items (mean age "
            f"{r['item']['mean_age']:,.0f}), {r['history']['found']:.1%} of history items")
    timings["stream_s"] = time.perf_counter() - t0
    for column, with_signal in cov.get("by_channel", {LOGIT: cov["with_signal"]}).items():
        log(f"[stream] window rows joined with teacher signals{'' if column == LOGIT else f' ({column})'}: "
            f"{cov['rows']:,} rows, {with_signal:,} with a signal ({cov['rows'] - with_signal:,} without: the aux "
            f"loss is masked there), {timings['stream_s']:.1f} s")
    return stream, cov


def _recorded_blocks(run: RayRun, signal_id: str) -> list[dict[str, Any]]:
    """Every window's logit blocks the teacher ``signal_id`` recorded, once complete: a stored
    teacher may have been cut elsewhere (the key holds no history_fraction where it cannot
    change the teacher), and the join takes only the blocks whose row ids overlap the
    students' rows."""
    import ray

    blocks = []
    for w in (HISTORY, STUDENT_WINDOW):
        got = ray.get(run.hub.wait.remote(signal_id, 0, w, 600.0))
        if got is None:
            raise RuntimeError(f"teacher {signal_id}: window {w} signals not complete after 600 s")
        blocks += got
    return blocks
