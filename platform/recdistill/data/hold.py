"""Whether a run reads its log's files once and holds the parsed rows in Ray's object store.

A batch run passes over its log several times before and while it trains: the split cut,
the statistics that size the auto keys, the vocabulary, the history cut, the held-out sets,
the teacher's stream and the signal join. Streamed from the files, every pass parses them
again; a TSV's parse is most of a pass's time. Held, the files are parsed once and every pass
reads Arrow blocks from the object store (spread over the cluster's nodes: nothing is
gathered on the driver).

``platform.hold_log=auto`` holds a text log (TSV, CSV, libsvm) whose estimated in-memory
size fits in a quarter of the cluster's object store (a laptop or a small node with a log it
can hold) and streams a larger one, which the object store could only take by spilling to
disk. Parquet is streamed: a pass reads only the columns it needs, without a parse, so
holding it would add a pass rather than save them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from recdistill.data.in_order import materialize_in_order

# In-memory Arrow bytes per byte on disk, by how the file is stored. Text: every categorical
# value becomes its characters plus a 4-byte offset, numbers become 8-byte values (Criteo's
# and Avazu's TSV/CSV measure 1.3-1.7x); compressed text opens about 5x before that. Parquet
# measures its first file: one row group read into Arrow.
TEXT_EXPANSION = 2.0
COMPRESSED_EXPANSION = 10.0
SHARE_OF_OBJECT_STORE = 0.25


def estimated_bytes(paths: list[str], fmt: str) -> int:
    """The log's Arrow size in memory, estimated from its files' sizes (no parse)."""
    from recdistill.data.formats.text import COMPRESSED_SUFFIXES

    sizes = [os.path.getsize(p) for p in paths]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        first = pq.ParquetFile(paths[0])
        if first.metadata.num_rows == 0 or first.metadata.num_row_groups == 0:
            return sum(sizes)
        group = first.read_row_group(0)  # Arrow's own size of one row group: encodings and compression undone
        in_memory = group.nbytes / max(1, group.num_rows) * first.metadata.num_rows
        return int(sum(sizes) * max(1.0, in_memory / max(1, sizes[0])))
    return int(sum(s * (COMPRESSED_EXPANSION if p.lower().endswith(COMPRESSED_SUFFIXES) else TEXT_EXPANSION)
                   for p, s in zip(paths, sizes)))


def object_store_budget() -> int:
    """The bytes a held log may take: a share of the cluster's object store."""
    import ray

    return int(ray.cluster_resources().get("object_store_memory", 0) * SHARE_OF_OBJECT_STORE)


@dataclass
class LogHold:
    """One run's decision, made when its log is opened (``apply``), and what it cost."""

    mode: str  # platform.hold_log: auto | yes | no
    log: Callable[[str], None] | None = None
    estimated_bytes: int = 0
    budget_bytes: int = 0
    held: bool = False
    read_s: float = 0.0  # the one read's wall time, when held

    def apply(self, reads: dict[str, Any], paths: list[str], fmt: str) -> dict[str, Any]:
        """``reads`` (name → lazy Dataset of the log's files) held in the object store, or
        as they are. Held, each read runs here, once, in file order (a later pass sees the
        rows in the order the files give them, as a streamed pass does)."""
        parsed = fmt != "parquet"
        if self.mode == "no" or (self.mode == "auto" and not parsed):
            return reads  # streamed whatever its size: nothing to estimate
        self.estimated_bytes = estimated_bytes(paths, fmt)
        self.budget_bytes = object_store_budget()
        self.held = self.mode == "yes" or self.estimated_bytes <= self.budget_bytes
        log = self.log
        if not self.held:
            if log is not None:
                log(f"[data] streaming the log from its files at every pass: about {_mb(self.estimated_bytes)} in "
                    f"memory, over the {_mb(self.budget_bytes)} a held log may take of the object store")
            return reads
        t0 = time.perf_counter()
        out = {}
        for name, ds in reads.items():
            out[name] = materialize_in_order(ds)
        self.read_s = time.perf_counter() - t0
        if log is not None:
            log(f"[data] log read once and held in the object store: about {_mb(self.estimated_bytes)} "
                f"(budget {_mb(self.budget_bytes)}), {len(paths)} file(s) in {self.read_s:.1f}s")
        return out

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "held": self.held, "estimated_bytes": self.estimated_bytes,
                "budget_bytes": self.budget_bytes, "read_s": round(self.read_s, 2)}


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"
