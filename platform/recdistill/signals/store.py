"""The signal store: teacher logits as Parquet, content-addressed by teacher key.

Layout under the store root (a local path or any pyarrow filesystem URI)::

    <key>/teacher.json        the committed training: its generation, config, metrics, steps
    <key>/_LEASE.json         held while a run trains this key (signals/lease.py)
    <key>/<generation>/v<version>/w<window>/part-r<rank>-<seq>.parquet   row_id, logit
    <key>/<generation>/v<version>/w<window>/_COMPLETE.json               rows and blocks, once whole

Every training of a key writes a fresh generation, so blocks of a crashed or earlier
training are never indexed beside the new ones (a join would pick between duplicate row
ids); ``teacher.json``, written last and atomically, names the generation readers use.
Writers and readers address one generation by its signal id, ``<key>/<generation>``.

A block's file name is fixed by (rank, seq), so a worker restarted from a checkpoint
rewrites the same file instead of adding a duplicate. Its row-id range comes from the
Parquet footer statistics, so the hub rebuilds its index from the files alone. Every JSON
record is written to a temporary name and renamed, so no reader sees half of one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
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
_GENERATION = re.compile(r"g\d{8}T\d{6}-[0-9a-f]+$")


def new_generation() -> str:
    """A fresh, time-sortable generation name for one training of a key."""
    return f"g{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def signal_id(key: str, generation: str) -> str:
    """What writers, the hub and readers name one training's signals by."""
    if not _GENERATION.match(generation):
        raise ValueError(f"signal generation {generation!r}: expected a name made by new_generation()")
    return f"{key}/{generation}"


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
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

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
        self.write_json(f"{self._dir(key, version, window)}/_COMPLETE.json",
                        {"rows": rows, "blocks": blocks, **(extra or {})})

    def write_teacher(self, key: str, info: dict[str, Any]) -> None:
        """Commit a training of ``key``: from now on readers use ``info["generation"]``."""
        signal_id(key, info.get("generation", ""))  # refuse a commit that names no generation
        self.write_json(f"{self.root}/{key}/teacher.json", info, indent=2)

    def commit_teacher(self, key: str, info: dict[str, Any]) -> None:
        """Commit ``info["generation"]`` as ``key``'s training, then delete the generations
        of crashed trainings; the one committed before stays for runs reading it now."""
        previous = self.teacher_info(key)
        self.write_teacher(key, info)
        self.remove_generations(key, {info["generation"]} | ({previous["generation"]} if previous else set()))

    def write_raw_result(self, key: str, info: dict[str, Any]) -> None:
        """A raw student's test metrics, shared by every run that trains the same raw student."""
        self.write_json(f"{self.root}/_raw/{key}.json", info)

    def write_json(self, path: str, obj: Any, indent: int | None = None) -> None:
        """Write a JSON record under a temporary name, then rename it into place."""
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(obj, indent=indent, default=_json_default).encode())
        self.fs.move(tmp, path)

    def create_json_exclusive(self, path: str, obj: Any) -> bool:
        """Create ``path`` holding ``obj`` unless it exists; True when this call created it.

        Atomic on a local or shared POSIX filesystem (O_EXCL). Object stores have no
        create-if-absent in pyarrow: there the record is written and read back, which
        narrows but does not close the window in which two writers both win."""
        data = json.dumps(obj, default=_json_default).encode()
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if self.local:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            return False
        self.write_json(path, obj)
        return self.read_json(path) == json.loads(data)

    def delete(self, path: str) -> None:
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    def remove_generations(self, key: str, keep: set[str]) -> list[str]:
        """Delete the generations of ``key`` not in ``keep`` (crashed or superseded trainings)."""
        base = f"{self.root}/{key}"
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        gone = []
        for info in self.fs.get_file_info(pafs.FileSelector(base)):
            if info.type == pafs.FileType.Directory and _GENERATION.match(info.base_name) \
                    and info.base_name not in keep:
                self.fs.delete_dir(info.path)
                gone.append(info.base_name)
        return gone

    # ------------------------------------------------------------------------- reading

    def read_json(self, path: str) -> Any | None:
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            raw = f.read()
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ValueError(f"signal store: {path} is not valid JSON ({e}); it was not written by recdistill "
                             f"or was damaged: delete it to let the teacher train again") from None

    def raw_result(self, key: str) -> dict[str, Any] | None:
        return self.read_json(f"{self.root}/_raw/{key}.json")

    def teacher_info(self, key: str) -> dict[str, Any] | None:
        """The committed training of ``key``, or None. A record from an older store layout
        (no generation) counts as none: the teacher trains again."""
        info = self.read_json(f"{self.root}/{key}/teacher.json")
        if not isinstance(info, dict) or not _GENERATION.match(str(info.get("generation", ""))):
            return None
        return info

    def committed(self, key: str) -> str | None:
        """The signal id of ``key``'s committed training, or None."""
        info = self.teacher_info(key)
        return signal_id(key, info["generation"]) if info else None

    def completion(self, key: str, version: int, window: int) -> dict[str, Any] | None:
        return self.read_json(f"{self._dir(key, version, window)}/_COMPLETE.json")

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


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return str(value)
