"""Cold users (``run.cold_users``): every model is also scored on the test rows of users with
few rows in the students' window, where the students know a user least and the teacher's
representations and semantic IDs should help most (TokenMinds).

A user's count is never gathered on the driver: each block of the students' stream writes
its own (user, rows) partial to the signal store's filesystem, and each test batch reads the
partials of its own users (a filtered read) and sums them. The partials are the run's own
and are deleted when its students are done.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recdistill.data.tensors import COLD
from recdistill.signals.blocks import read_block
from recdistill.signals.store import SignalStore, cached_store

_USER, _ROWS = "user", "rows"


def write_user_counts(batch: pa.Table, store_uri: str, directory: str, column: str) -> pa.Table:
    """This block's rows per user, as one Parquet partial under ``directory``."""
    store = cached_store(store_uri)
    users, counts = np.unique(batch.column(column).to_numpy(), return_counts=True)
    if len(users):
        store.fs.create_dir(directory, recursive=True)
        pq.write_table(pa.table({_USER: pa.array(users, pa.int64()), _ROWS: pa.array(counts, pa.int64())}),
                       f"{directory}/part-{uuid.uuid4().hex}.parquet", filesystem=store.fs)
    return pa.table({"rows": pa.array([batch.num_rows], pa.int64())})


def user_rows(users: np.ndarray, store_uri: str, directory: str) -> np.ndarray:
    """Each given user's rows in the students' window (0 for a user it never had)."""
    store = cached_store(store_uri)
    users = np.asarray(users, np.int64)
    out = np.zeros(len(users), np.int64)
    files = [f.path for f in store.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
             if f.path.endswith(".parquet")]
    if not files or not len(users):
        return out
    wanted = np.unique(users)
    t = pa.concat_tables([read_block(store.fs, p, filters=[(_USER, "in", wanted)]) for p in files])
    if not t.num_rows:
        return out
    uniq, inverse = np.unique(t.column(_USER).to_numpy(), return_inverse=True)
    totals = np.bincount(inverse, weights=t.column(_ROWS).to_numpy()).astype(np.int64)
    pos = np.minimum(np.searchsorted(uniq, users), len(uniq) - 1)
    hit = uniq[pos] == users
    out[hit] = totals[pos[hit]]
    return out


def mark_cold(batch: pa.Table, store_uri: str, directory: str, column: str, threshold: int) -> pa.Table:
    """``batch`` with ``cold_user``: whether its user had at most ``threshold`` window rows."""
    rows = user_rows(batch.column(column).to_numpy(), store_uri, directory)
    return batch.append_column(COLD, pa.array(rows <= threshold))


def count_window_users(stream: Any, store: SignalStore, experiment: str, column: str) -> str:
    """Write the stream's per-user partials; the directory they are in."""
    directory = f"{store.root}/cold_users/{experiment}"
    store.delete_dir(directory)
    stream.map_batches(write_user_counts, batch_format="pyarrow", batch_size=None,
                       fn_kwargs={"store_uri": store.uri, "directory": directory, "column": column}).materialize()
    return directory
