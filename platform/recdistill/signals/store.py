"""The signal store: teacher signals as Parquet, content-addressed by teacher key.

Layout under the store root (a local path or any pyarrow filesystem URI)::

    <key>/teacher.json        the committed training: its generation, the kinds it supplies, config, metrics
    <key>/_LEASE.json         held while a run trains this key (signals/lease.py)
    <key>/<generation>/v<version>/w<window>/part-r<rank>-<seq>.parquet   row_id, teacher_logit
    <key>/<generation>/v<version>/w<window>/_COMPLETE.json               rows and blocks, once whole
    <key>/<generation>/<kind>/<channel>/v<version>/w<window>/...         other kinds and channels, alike

Blocks of every kind (signals/kinds.py) and their layout: signals/blocks.py.

Every training of a key writes a fresh generation, so blocks of a crashed or earlier
training are never indexed beside the new ones (a join would pick between duplicate row
ids); ``teacher.json``, written last and atomically, names the generation readers use.
Writers and readers address one generation by its signal id, ``<key>/<generation>``.

A block's file name is fixed by (rank, seq), so a worker restarted from a checkpoint
rewrites the same file instead of adding a duplicate. Every JSON record is written to a
temporary name and renamed, so no reader sees half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from recdistill.data.schema import ROW_ID
from recdistill.signals.blocks import (PART, BlockMeta, EntityBlockMeta, Meta, block_meta, footer_meta,
                                       read_entity_as_of, read_row_range, signal_dir, temp_name,
                                       write_block_file, write_then_move)
from recdistill.signals.kinds import (DEFAULT_CHANNEL, LOGIT, LOGIT_KIND, check_kinds, check_reads, signal_kind,
                                      supplied)

_GENERATION = re.compile(r"g\d{8}T\d{6}-[0-9a-f]+$")
EXPERTS_DIR = "_experts"  # a committee's experts by key (``engine.experts``); their lease is in there too


def new_generation() -> str:
    """A fresh, time-sortable generation name for one training of a key."""
    return f"g{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def signal_id(key: str, generation: str) -> str:
    """What writers, the hub and readers name one training's signals by."""
    if not _GENERATION.match(generation):
        raise ValueError(f"signal generation {generation!r}: expected a name made by new_generation()")
    return f"{key}/{generation}"


class SignalStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            # absolute, so Ray workers (whose working directory differs) find the same files
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
            self.uri = self.root
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self) -> tuple[Any, ...]:  # filesystems pickle; keep the URI as the identity
        return (SignalStore, (self.uri,))

    def _dir(self, key: str, version: int, window: int, kind: str, channel: str) -> str:
        return f"{signal_dir(f'{self.root}/{key}', kind, channel)}/v{version}/w{window}"

    # ------------------------------------------------------------ writing (teacher workers)

    def write_block(self, key: str, version: int, window: int, rank: int, seq: int,
                    row_ids: np.ndarray, logits: np.ndarray, channel: str = DEFAULT_CHANNEL) -> BlockMeta:
        """A block of logits from arrays, as teacher workers record them (``write_table`` for any kind)."""
        table = pa.table({ROW_ID: pa.array(row_ids, pa.int64()), LOGIT: pa.array(logits, pa.float32())},
                         schema=LOGIT_KIND.schema())
        return self.write_table(key, LOGIT_KIND.name, version, window, rank, seq, table, channel)

    def write_table(self, key: str, kind: str, version: int, window: int, rank: int, seq: int,
                    table: pa.Table, channel: str = DEFAULT_CHANNEL) -> Meta:
        """A block of any kind, checked against the kind's schema (signals/kinds.py)."""
        k = signal_kind(kind)
        d = self._dir(key, version, window, kind, channel)
        path = f"{d}/part-r{rank:04d}-{seq:06d}.parquet"
        table = k.validate(table, path)
        if table.num_rows == 0:
            raise ValueError(f"{path}: an empty signal block")
        self.fs.create_dir(d, recursive=True)
        write_block_file(self.fs, path, table)
        return block_meta(k, key, version, window, channel, path, table.num_rows, k.key_ranges(table))

    def mark_complete(self, key: str, version: int, window: int, rows: int, blocks: int,
                      extra: dict[str, Any] | None = None, kind: str = LOGIT_KIND.name,
                      channel: str = DEFAULT_CHANNEL) -> None:
        """``extra``: what the teacher knew of the window when it published it (its shift
        detector's verdict), kept next to the blocks for every reader."""
        self.write_json(f"{self._dir(key, version, window, kind, channel)}/_COMPLETE.json",
                        {"rows": rows, "blocks": blocks, **(extra or {})})

    def write_teacher(self, key: str, info: dict[str, Any]) -> None:
        """Commit a training of ``key``: from now on readers use ``info["generation"]``."""
        signal_id(key, info.get("generation", ""))  # refuse a commit that names no generation
        self.write_json(f"{self.root}/{key}/teacher.json", info, indent=2)

    def commit_teacher(self, key: str, info: dict[str, Any], supplies: Sequence[str] = (LOGIT_KIND.name,)) -> None:
        """Commit ``info["generation"]`` as ``key``'s training, then delete the generations of
        crashed trainings; the one committed before stays for runs reading it now. The signal
        kinds the teacher ``supplies`` go into ``info`` itself, so the run that trained it
        reports the same record as a run that reuses it."""
        previous = self.teacher_info(key, reads=())
        info["supplies"] = check_kinds(supplies)
        self.write_teacher(key, info)
        self.remove_generations(key, {info["generation"]} | ({previous["generation"]} if previous else set()))

    def write_raw_result(self, key: str, info: dict[str, Any]) -> None:
        """A raw student's test metrics, shared by every run that trains the same raw student."""
        self.write_json(f"{self.root}/_raw/{key}.json", info)

    # A trained model's weights beside its signals (a teacher: ``<key>/<generation>/model.safetensors``;
    # a raw student: ``_raw/<key>.safetensors``), so a run that reuses the model still writes its artifact.
    def teacher_weights_path(self, key: str, generation: str) -> str:
        return f"{self.root}/{signal_id(key, generation)}/model.safetensors"

    def raw_weights_path(self, key: str) -> str:
        return f"{self.root}/_raw/{key}.safetensors"

    # A committee's experts (``engine.experts``): ``_experts/<key>/expert<k>.safetensors``, then
    # ``info.json`` written last, so a key whose info is there has every expert's weights.
    def expert_weights_path(self, key: str, k: int) -> str:
        return f"{self.root}/{EXPERTS_DIR}/{key}/expert{k}.safetensors"

    def experts_info(self, key: str) -> dict[str, Any] | None:
        info = self.read_json(f"{self.root}/{EXPERTS_DIR}/{key}/info.json")
        return info if isinstance(info, dict) else None

    def write_experts_info(self, key: str, info: dict[str, Any]) -> None:
        self.write_json(f"{self.root}/{EXPERTS_DIR}/{key}/info.json", info)

    def window_weights_path(self, run: str, window: int, name: str) -> str:
        """Where an online run's worker hands a model over as it was after ``window``
        (``stream.keep_models=every``); the driver makes it an artifact, then removes the run's."""
        return f"{self.root}/_window_models/{run}/w{window:05d}/{name}.safetensors"

    def remove_window_weights(self, run: str) -> None:
        self.delete_dir(f"{self.root}/_window_models/{run}")

    def delete_dir(self, path: str) -> None:
        """Delete a directory and everything under it (nothing when it is not there)."""
        if self.fs.get_file_info(path).type == pafs.FileType.Directory:
            self.fs.delete_dir(path)

    def put_file(self, local: str | os.PathLike[str], path: str) -> None:
        """Copy a local file to ``path`` in the store, under a temporary name first."""
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        write_then_move(self.fs, path, lambda tmp: pafs.copy_files(os.fspath(local), tmp, pafs.LocalFileSystem(),
                                                                   self.fs))

    def exists(self, path: str) -> bool:
        """Whether the store holds a file at ``path``."""
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def get_file(self, path: str, local: str | os.PathLike[str]) -> bool:
        """Copy ``path`` from the store to a local file; False when the store has none."""
        if not self.exists(path):
            return False
        pafs.copy_files(path, os.fspath(local), self.fs, pafs.LocalFileSystem())
        return True

    def write_json(self, path: str, obj: Any, indent: int | None = None) -> None:
        """Write a JSON record under a temporary name, then rename it into place."""
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        data = json.dumps(obj, indent=indent, default=_json_default).encode()

        def write(tmp: str) -> None:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)

        write_then_move(self.fs, path, write)

    def create_json_exclusive(self, path: str, obj: Any) -> bool:
        """Create ``path`` holding ``obj`` unless it exists; True when this call created it.

        Atomic on a local or shared POSIX filesystem: the whole record is written under a
        temporary name, then hard-linked into place, which fails when the name exists. (An
        O_EXCL create followed by a write let a contender read the empty file in between
        and fail the run on "not valid JSON".) Object stores have no create-if-absent in
        pyarrow: there the record is written and read back, which narrows but does not
        close the window in which two writers both win."""
        data = json.dumps(obj, default=_json_default).encode()
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if self.local:
            tmp = temp_name(path)
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):  # the open failed: nothing to remove
                    os.unlink(tmp)
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

    def teacher_info(self, key: str, reads: Sequence[str] = (LOGIT_KIND.name,)) -> dict[str, Any] | None:
        """The committed training of ``key``, or None; a ValueError when it does not supply a
        kind its reader ``reads``. A record from an older store layout (no generation) counts
        as none: the teacher trains again."""
        info = self.read_json(f"{self.root}/{key}/teacher.json")
        if not isinstance(info, dict) or not _GENERATION.match(str(info.get("generation", ""))):
            return None
        check_reads(f"{key} ({self.root}/{key}/teacher.json)", supplied(info), reads)
        return info

    def committed(self, key: str, reads: Sequence[str] = (LOGIT_KIND.name,)) -> str | None:
        """The signal id of ``key``'s committed training, or None."""
        info = self.teacher_info(key, reads)
        return signal_id(key, info["generation"]) if info else None

    def completion(self, key: str, version: int, window: int, kind: str = LOGIT_KIND.name,
                   channel: str = DEFAULT_CHANNEL) -> dict[str, Any] | None:
        return self.read_json(f"{self._dir(key, version, window, kind, channel)}/_COMPLETE.json")

    def scan(self, key: str, kind: str = LOGIT_KIND.name, channel: str = DEFAULT_CHANNEL
             ) -> tuple[list[Meta], list[tuple[int, int]]]:
        """Every block of one kind and channel of a teacher key found in the store (from
        footers), and the (version, window) pairs marked complete."""
        k, base = signal_kind(kind), signal_dir(f"{self.root}/{key}", kind, channel)
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return [], []
        blocks, complete = [], []
        for info in self.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            # other kinds and channels lie deeper under the single teacher's logits: not 3 parts
            parts = info.path[len(base) + 1:].split("/")
            if len(parts) != 3 or not (parts[0].startswith("v") and parts[1].startswith("w")):
                continue
            version, window = int(parts[0][1:]), int(parts[1][1:])
            if parts[2] == "_COMPLETE.json":
                complete.append((version, window))
            elif PART.search(parts[2]):
                blocks.append(footer_meta(self.fs, k, key, version, window, channel, info.path))
        return sorted(blocks, key=lambda b: b.path), sorted(complete)

    def read_range(self, blocks: list[BlockMeta], lo: int, hi: int) -> pa.Table:
        """Values of a row-keyed kind's blocks overlapping row ids [lo, hi], sorted by row id."""
        return read_row_range(self.fs, blocks, lo, hi)

    def read_as_of(self, blocks: list[EntityBlockMeta], entity_ids: np.ndarray, as_of: int | np.ndarray
                   ) -> pa.Table:
        """An entity-time kind's latest value per entity at or before ``as_of`` (signals/blocks.py)."""
        return read_entity_as_of(self.fs, blocks, entity_ids, as_of)


_CACHED: dict[str, SignalStore] = {}


def cached_store(uri: str) -> SignalStore:
    """This process's store for ``uri``, opened once: the joins run once per batch in Ray
    Data workers, which would otherwise resolve the filesystem every time."""
    store = _CACHED.get(uri)
    if store is None:
        store = _CACHED[uri] = SignalStore(uri)
    return store


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return str(value)
