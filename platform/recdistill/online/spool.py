"""The window spool: the encoded log cut into time windows, written once as Parquet
partitioned by window, so the streaming phase can replay one window at a time as a live
system would receive it, each reader touching only that window's files.

It lives next to the signal store (any pyarrow filesystem URI), keyed by the data and
the window cut, so every experiment and sweep over the same log shares it::

    _windows/<spool key>/_SPOOL.json                 rows, bounds, schema, buckets, generation
    _windows/<spool key>/<generation>/window=<w>/    Parquet

Each build writes its own generation and commits it by creating ``_SPOOL.json``
exclusively, last: a crashed build leaves nothing a reader accepts, and of two builds at
once the first to commit wins. The record is JSON (never pickle): a store is data, and
whoever can write to it must not be able to run code in the readers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from recdistill.config import ExperimentConfig
from recdistill.data.schema import ROW_ID, LogSchema
from recdistill.data.shuffle_strategy import use_shuffle_strategy
from recdistill.data.windows import WINDOW, with_windows

DONE = "_SPOOL.json"


@dataclass
class Spool:
    uri: str
    schema: LogSchema
    buckets: dict[str, int]
    rows: list[int]  # rows per window
    # (a Spool travels to Train workers inside their loop config; it holds plain data only)

    def path(self, window: int) -> str:
        return f"{self.uri}/{WINDOW}={window}"


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)


def _batch_phase(batch: pa.Table, batch_windows: int) -> pa.Table:
    return batch.filter(pc.less(batch.column(WINDOW), batch_windows))


def build_spool(cfg: ExperimentConfig, store_root: str, log: Callable[[str], None] = print) -> Spool:
    """Write (or find) the spool for ``cfg``'s log: one Ray Data pass, sharded, nothing on
    the driver but per-window counts. The vocabulary (encoding=vocab) is fitted on the
    batch-phase windows only: what a live system knows when streaming starts."""
    from recdistill.data.datasource import new_ledger, read_rejects
    from recdistill.data.log import open_log
    from recdistill.data.preprocess import build_preprocessor, fit_vocab
    from recdistill.train.keys import spool_key
    from recdistill.signals.store import SignalStore, new_generation

    s = cfg.stream
    store = SignalStore(store_root)
    key = spool_key(cfg)
    base = f"{store.uri.rstrip('/')}/_windows/{key}"
    done = f"{store.root}/_windows/{key}/{DONE}"
    found = committed_spool(store, done, base)
    if found is not None:
        log(f"[spool] reusing the window spool {found.uri} ({sum(found.rows):,} rows in {len(found.rows)} windows)")
        return found

    t0 = time.perf_counter()
    use_shuffle_strategy(cfg.platform.shuffle_strategy)
    ledger = new_ledger()
    ds, schema = open_log(cfg, ledger=ledger)
    tagged, bounds = with_windows(ds, schema.order_column, s.windows)
    vocab = None
    if cfg.data.encoding == "vocab":
        vocab = fit_vocab(tagged.map_batches(_batch_phase, batch_format="pyarrow",
                                             fn_kwargs={"batch_windows": s.batch_windows}),
                          schema, cfg.data.min_count)
    pre = build_preprocessor(schema, cfg.data, vocab)
    encoded = tagged.map_batches(pre, batch_format="pyarrow")
    generation = new_generation()
    uri = f"{base}/{generation}"
    fs, root = _fs(uri)
    encoded.write_parquet(uri, partition_cols=[WINDOW])
    _keep_preprocessor(store, uri, pre)
    rows = []
    for w in range(s.windows):
        d = f"{root}/{WINDOW}={w}"
        rows.append(pads.dataset(d, filesystem=fs, format="parquet").count_rows()
                    if fs.get_file_info(d).type == pafs.FileType.Directory else 0)
    if min(rows) == 0:
        fs.delete_dir(root)
        raise ValueError(f"stream.windows={s.windows}: window(s) {[w for w, n in enumerate(rows) if n == 0]} of "
                         f"the log are empty (too few rows for that many windows); use fewer windows")
    read_rejects(ledger).check_budget(cfg.data.error_budget, cfg.data.path or "synthetic log")
    record = {"generation": generation, "rows": rows, "bounds": bounds, "schema": json.loads(schema.to_json()),
              "buckets": pre.buckets}
    if not store.create_json_exclusive(done, record):
        fs.delete_dir(root)  # another run committed the same spool first: use theirs
        found = committed_spool(store, done, base)
        if found is None:
            raise RuntimeError(f"window spool {base}: {DONE} appeared but cannot be read")
        log(f"[spool] another run wrote the window spool first; using {found.uri}")
        return found
    log(f"[spool] {sum(rows):,} rows in {s.windows} windows ({min(rows):,}–{max(rows):,} rows each) written to "
        f"{uri} in {time.perf_counter() - t0:.1f} s")
    return Spool(uri, schema, pre.buckets, rows)


PREPROCESSOR = "_preprocessor"  # in a spool generation: the fitted encoder, for the run's model artifacts


def _preprocessor_dir(store: Any, spool_uri: str) -> str:
    """Where the spool at ``spool_uri`` (under the store's URI) keeps its encoder, as a path
    in the store's filesystem."""
    return f"{store.root}/{spool_uri[len(store.uri.rstrip('/')) + 1:]}/{PREPROCESSOR}"


def _keep_preprocessor(store: Any, spool_uri: str, pre: Any) -> None:
    import tempfile

    from recdistill.artifacts.preprocess_state import write_preprocessor

    root = _preprocessor_dir(store, spool_uri)
    with tempfile.TemporaryDirectory() as d:
        for name in write_preprocessor(pre, Path(d)):
            store.put_file(Path(d, name), f"{root}/{name}")


def spool_preprocessor(spool: Spool, store: Any) -> Any:
    """The preprocessor the spool was encoded with (None for a spool written before it was
    kept there)."""
    import tempfile

    from recdistill.artifacts.preprocess_state import PREPROCESS, VOCAB, read_preprocessor

    root = _preprocessor_dir(store, spool.uri)
    with tempfile.TemporaryDirectory() as d:
        if not store.get_file(f"{root}/{PREPROCESS}", Path(d, PREPROCESS)):
            return None
        store.get_file(f"{root}/{VOCAB}", Path(d, VOCAB))
        return read_preprocessor(Path(d))


def committed_spool(store: Any, done: str, base: str) -> Spool | None:
    """The committed spool described by ``done``, or None when there is none yet."""
    rec = store.read_json(done)
    if rec is None:
        return None
    try:
        schema = LogSchema.from_json(json.dumps(rec["schema"]))
        buckets = {str(k): int(v) for k, v in rec["buckets"].items()}
        rows = [int(n) for n in rec["rows"]]
        generation = str(rec["generation"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"window spool {done}: not a recdistill spool record ({type(e).__name__}: {e}); "
                         f"delete {base} to rebuild it") from None
    if "/" in generation or generation.startswith("."):
        raise ValueError(f"window spool {done}: bad generation {generation!r}; delete {base} to rebuild it")
    return Spool(f"{base}/{generation}", schema, buckets, rows)


def read_window(spool: Spool, window: int, columns: list[str] | None = None) -> pa.Table:
    """One window's rows, in time order (a window is small: it is what a live system
    receives between two updates)."""
    fs, root = _fs(spool.path(window))
    table = pads.dataset(root, filesystem=fs, format="parquet").to_table(columns=columns)
    order = spool.schema.order_column
    keys = [(order, "ascending")] + ([(ROW_ID, "ascending")] if order != ROW_ID else [])
    return table.sort_by(keys)
