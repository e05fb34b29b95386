"""The signal store: teacher logits as Parquet, content-addressed by teacher key.

Layout under the store root (a local path or any pyarrow filesystem URI)::

    <key>/teacher.json                       the teacher's config, metrics and step count
    <key>/v<version>/w<window>/part-r<rank>-<seq>.parquet    columns row_id, logit
    <key>/v<version>/w<window>/_COMPLETE.json                rows and blocks, once whole

A block's file name is fixed by (rank, seq), so a worker restarted from a checkpoint
rewrites the same file instead of adding a duplicate. Its row-id range comes from the
Parquet footer statistics, so the hub rebuilds its index from the files alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recdistill.data.schema import ROW_ID

LOGIT = "teacher_logit"
_PART = re.compile(r"part-r(\d+)-(\d+)\.parquet$")
SIGNAL_SCHEMA = pa.schema([(ROW_ID, pa.int64()), (LOGIT, pa.float32())])


@dataclass(frozen=True)
class BlockMeta:
    key: str
    version: int
    window: int
    path: str  # filesystem path inside the store's filesystem
    rows: int
    row_id_min: int
    row_id_max: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SignalStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            import os

            # absolute, so Ray workers (whose working directory differs) find the same files
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
            self.uri = self.root
        self.root = self.root.rstrip("/")

    def __reduce__(self) -> tuple[Any, ...]:  # filesystems pickle; keep the URI as the identity
        return (SignalStore, (self.uri,))

    def _dir(self, key: str, version: int, window: int) -> str:
        return f"{self.root}/{key}/v{version}/w{window}"

    # ------------------------------------------------------------ writing (teacher workers)

    def write_block(self, key: str, version: int, window: int, rank: int, seq: int,
                    row_ids: np.ndarray, logits: np.ndarray) -> BlockMeta:
        if row_ids.size == 0:
            raise ValueError("write_block: an empty signal block")
        d = self._dir(key, version, window)
        self.fs.create_dir(d, recursive=True)
        path = f"{d}/part-r{rank:04d}-{seq:06d}.parquet"
        table = pa.table({ROW_ID: pa.array(row_ids, pa.int64()), LOGIT: pa.array(logits, pa.float32())},
                         schema=SIGNAL_SCHEMA)
        tmp = path + ".tmp"
        with self.fs.open_output_stream(tmp) as f:
            pq.write_table(table, f)
        self.fs.move(tmp, path)  # readers never see half a file
        return BlockMeta(key, version, window, path, int(row_ids.size), int(row_ids.min()), int(row_ids.max()))

    def mark_complete(self, key: str, version: int, window: int, rows: int, blocks: int,
                      extra: dict[str, Any] | None = None) -> None:
        """``extra``: what the teacher knew of the window when it published it (its shift
        detector's verdict), kept next to the blocks for every reader."""
        d = self._dir(key, version, window)
        self.fs.create_dir(d, recursive=True)
        with self.fs.open_output_stream(f"{d}/_COMPLETE.json") as f:
            f.write(json.dumps({"rows": rows, "blocks": blocks, **(extra or {})}, default=float).encode())

    def write_teacher(self, key: str, info: dict[str, Any]) -> None:
        self.fs.create_dir(f"{self.root}/{key}", recursive=True)
        with self.fs.open_output_stream(f"{self.root}/{key}/teacher.json") as f:
            f.write(json.dumps(info, indent=2, default=str).encode())

    def write_raw_result(self, key: str, info: dict[str, Any]) -> None:
        """A raw student's test metrics, shared by every run that trains the same raw student."""
        self.fs.create_dir(f"{self.root}/_raw", recursive=True)
        with self.fs.open_output_stream(f"{self.root}/_raw/{key}.json") as f:
            f.write(json.dumps(info, default=str).encode())

    # ------------------------------------------------------------------------- reading

    def raw_result(self, key: str) -> dict[str, Any] | None:
        path = f"{self.root}/_raw/{key}.json"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read())

    def teacher_info(self, key: str) -> dict[str, Any] | None:
        path = f"{self.root}/{key}/teacher.json"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read())

    def completion(self, key: str, version: int, window: int) -> dict[str, Any] | None:
        path = f"{self._dir(key, version, window)}/_COMPLETE.json"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read())

    def scan(self, key: str) -> tuple[list[BlockMeta], list[tuple[int, int]]]:
        """Every block of a teacher key found in the store (from footers), and the
        (version, window) pairs marked complete."""
        base = f"{self.root}/{key}"
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return [], []
        blocks, complete = [], []
        for info in self.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            parts = info.path[len(base) + 1:].split("/")
            if len(parts) != 3 or not (parts[0].startswith("v") and parts[1].startswith("w")):
                continue
            version, window = int(parts[0][1:]), int(parts[1][1:])
            if parts[2] == "_COMPLETE.json":
                complete.append((version, window))
            elif _PART.search(parts[2]):
                md = pq.read_metadata(info.path, filesystem=self.fs)
                lo = min(md.row_group(i).column(0).statistics.min for i in range(md.num_row_groups))
                hi = max(md.row_group(i).column(0).statistics.max for i in range(md.num_row_groups))
                blocks.append(BlockMeta(key, version, window, info.path, md.num_rows, int(lo), int(hi)))
        return sorted(blocks, key=lambda b: b.path), sorted(complete)

    def read_range(self, blocks: list[BlockMeta], lo: int, hi: int) -> pa.Table:
        """Signals of the blocks overlapping row ids [lo, hi], sorted by row id."""
        parts = [pq.read_table(b.path, filesystem=self.fs, filters=[(ROW_ID, ">=", lo), (ROW_ID, "<=", hi)])
                 for b in blocks if b.row_id_max >= lo and b.row_id_min <= hi]
        if not parts:
            return SIGNAL_SCHEMA.empty_table()
        t = pa.concat_tables(parts)
        return t.take(pa.compute.sort_indices(t, sort_keys=[(ROW_ID, "ascending")]))
