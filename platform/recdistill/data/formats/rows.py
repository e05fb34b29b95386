"""Row bookkeeping every format shares: reject reasons, per-batch reject masks, row ids, the canonical table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.data.rejects import RejectTally
from recdistill.data.schema import LogSchema

LINE_BITS = 40
MAX_FILES = 1 << (63 - LINE_BITS)

# Reject reason keys: the detail (column, expected vs found) goes into each example.
WRONG_FIELD_COUNT = "wrong field count"
BAD_LABEL = "label not in {0,1}"
NON_NUMERIC_DENSE = "non-numeric dense value"
NON_NUMERIC_RATING = "non-numeric rating"
BAD_TIMESTAMP = "bad timestamp"
BAD_LIBSVM_TOKEN = "bad libsvm token"
MISSING_ROW_ID = "missing row_id"
INVALID_UTF8 = "invalid UTF-8"


@dataclass
class Rejects:
    """Per-batch reject masks; each row is counted once, under the first reason it fails."""

    n: int
    bad: np.ndarray = field(init=False)
    found: list[tuple[str, str, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bad = np.zeros(self.n, dtype=bool)

    def flag(self, mask: np.ndarray | pa.Array | pa.ChunkedArray, reason: str, detail: str | None = None) -> None:
        m = np_mask(mask)
        new = m & ~self.bad
        if new.any():
            self.found.append((reason, detail or reason, np.flatnonzero(new)))
            self.bad |= m

    def record(self, tally: RejectTally, path: str, lines: np.ndarray,
               text: Callable[[int], str]) -> None:
        for reason, detail, idx in self.found:
            first = idx[:5]
            tally.add_many(reason, path, [int(lines[i]) for i in first], [text(int(i)) for i in first],
                           [detail] * len(first), count=len(idx))


def np_mask(mask: np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean numpy mask; null counts as False."""
    if isinstance(mask, np.ndarray):
        return mask
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def row_ids(file_index: int, lines: np.ndarray) -> pa.Array:
    return pa.array((np.int64(file_index) << LINE_BITS) | lines.astype(np.int64), type=pa.int64())


def assemble(schema: LogSchema, columns: dict[str, pa.Array], keep: np.ndarray | None) -> pa.Table:
    """The canonical table of ``schema`` from ``columns`` (by name), less the rows ``keep`` drops."""
    target = schema.arrow_schema()
    arrays = [columns[name] for name in target.names]
    table = pa.Table.from_arrays(arrays, schema=target)
    if keep is not None and not keep.all():
        table = table.filter(pa.array(keep))
    return table
