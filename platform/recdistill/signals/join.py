"""Where students read the teacher's signals: each row gets its teacher logit by row id."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from recdistill.data.schema import ROW_ID
from recdistill.signals.blocks import BlockMeta
from recdistill.signals.kinds import LOGIT
from recdistill.signals.store import cached_store


def join_signals(batch: pa.Table, store_uri: str, blocks: list[dict[str, Any]], column: str = LOGIT) -> pa.Table:
    """Add the teacher's logit to each row as ``column`` (NaN where the teacher has none), by
    row id.

    Reads only the signal blocks whose row-id range overlaps the batch's.
    """
    store = cached_store(store_uri)
    ids = batch.column(ROW_ID).to_numpy()
    logits = np.full(len(ids), np.nan, dtype=np.float32)
    if len(ids):
        sig = store.read_range([BlockMeta(**b) for b in blocks], int(ids.min()), int(ids.max()))
        if sig.num_rows:
            sid = sig.column(ROW_ID).to_numpy()
            pos = np.minimum(np.searchsorted(sid, ids), len(sid) - 1)
            found = sid[pos] == ids
            logits[found] = sig.column(LOGIT).to_numpy()[pos[found]]
    return batch.append_column(column, pa.array(logits, pa.float32()))


def coverage(batch: pa.Table, column: str = LOGIT) -> dict[str, int]:
    """Rows of a joined batch and how many of them have a teacher signal (in ``column``)."""
    z = batch.column(column).to_numpy(zero_copy_only=False)
    return {"rows": len(z), "with_signal": int((~np.isnan(z)).sum())}
