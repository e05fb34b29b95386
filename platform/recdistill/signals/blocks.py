"""Signal blocks: one Parquet file of one kind's values from one channel, and how they are read.

Where a block lives under its key (a signal id, ``<key>/<generation>``)::

    v<version>/w<window>/part-r<rank>-<seq>.parquet                    logits of the single teacher
    <kind>/<channel>/v<version>/w<window>/part-r<rank>-<seq>.parquet   every other kind or channel

The first line is the layout of stores written before kinds and channels, so their blocks
read as the single teacher's logits. A block's key ranges come from its Parquet footer, so
the hub rebuilds its index from the files alone.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recdistill.data.schema import ROW_ID
from recdistill.signals.kinds import (DEFAULT_CHANNEL, ENTITY_ID, ENTITY_TIME, LOGIT_KIND, ROW, TIME, SignalKind,
                                      check_channel, signal_kind)

PART = re.compile(r"part-r(\d+)-(\d+)\.parquet$")


@dataclass(frozen=True)
class BlockMeta:
    """A block of a row-keyed kind; its row-id range prunes range reads."""

    key: str
    version: int
    window: int
    path: str  # filesystem path inside the store's filesystem
    rows: int
    row_id_min: int
    row_id_max: int
    kind: str = LOGIT_KIND.name
    channel: str = DEFAULT_CHANNEL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EntityBlockMeta:
    """A block of an entity-time kind; its entity and time ranges prune as-of reads."""

    key: str
    kind: str
    channel: str
    version: int
    window: int
    path: str
    rows: int
    entity_min: int
    entity_max: int
    time_min: int
    time_max: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Meta = BlockMeta | EntityBlockMeta


def signal_dir(key_dir: str, kind: str, channel: str) -> str:
    """The directory of one kind and channel under a key's directory."""
    signal_kind(kind)
    if (kind, check_channel(channel)) == (LOGIT_KIND.name, DEFAULT_CHANNEL):
        return key_dir
    return f"{key_dir}/{kind}/{channel}"


def block_meta(kind: SignalKind, key: str, version: int, window: int, channel: str, path: str, rows: int,
               ranges: Sequence[tuple[int, int]]) -> Meta:
    """A block's meta from the (min, max) of each of its kind's key columns."""
    if kind.keyed_by == ROW:
        ((lo, hi),) = ranges
        return BlockMeta(key, version, window, path, rows, lo, hi, kind.name, channel)
    (e_lo, e_hi), (t_lo, t_hi) = ranges
    return EntityBlockMeta(key, kind.name, channel, version, window, path, rows, e_lo, e_hi, t_lo, t_hi)


def read_block(fs: pafs.FileSystem, path: str, **kwargs: Any) -> pa.Table:
    """A block file read through one open handle (``kwargs``: ``pq.read_table``'s columns,
    filters). A resumed writer replaces a block under its own name (``write_block_file``);
    ``pq.read_table(path)`` opens the path twice, footer then pages, and a replacement in
    between read as the new file's pages at the old footer's offsets: "Invalid column
    metadata", "Page was smaller than expected" (measured: ~10% of reads racing a writer that
    replaces the file in a loop; none through one handle). One handle reads one file."""
    with fs.open_input_file(path) as f:
        return pq.read_table(f, **kwargs)


def temp_name(path: str) -> str:
    """A name beside ``path`` to write it under before it is moved into place: its own to
    each writer (two writers of one path, say a retried task beside the one it replaces,
    would otherwise write into one file), and never a block's or a record's name."""
    return f"{path}.tmp-{secrets.token_hex(4)}"


def write_then_move(fs: pafs.FileSystem, path: str, write: Callable[[str], None]) -> None:
    """``write(name)`` a file under a temporary name, then move it to ``path``: readers never
    see half a file, and a failed write leaves no temporary file behind."""
    tmp = temp_name(path)
    try:
        write(tmp)
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):  # the write's own error is the one to see
            if fs.get_file_info(tmp).type == pafs.FileType.File:
                fs.delete_file(tmp)
        raise


def write_block_file(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    def write(tmp: str) -> None:
        with fs.open_output_stream(tmp) as f:
            pq.write_table(table, f)

    write_then_move(fs, path, write)


def footer_meta(fs: pafs.FileSystem, kind: SignalKind, key: str, version: int, window: int, channel: str,
                path: str) -> Meta:
    """A stored block's meta from its Parquet footer (its key columns come first, in order)."""
    with fs.open_input_file(path) as f:  # one handle, as in read_block
        md = pq.read_metadata(f)
    ranges = [(int(min(md.row_group(g).column(i).statistics.min for g in range(md.num_row_groups))),
               int(max(md.row_group(g).column(i).statistics.max for g in range(md.num_row_groups))))
              for i in range(len(kind.key_fields))]
    return block_meta(kind, key, version, window, channel, path, md.num_rows, ranges)


def _one_signal(blocks: Sequence[Meta], keyed_by: str, read: str) -> SignalKind:
    """The kind of blocks read together: one kind and one channel, or a key would appear once
    per channel. No blocks: the single teacher's logits."""
    signals = sorted({(b.kind, b.channel) for b in blocks})
    if len(signals) > 1:
        raise ValueError(f"{read}: blocks of {len(signals)} signals (kind, channel) {signals}: read one at a time")
    kind = signal_kind(signals[0][0]) if signals else LOGIT_KIND
    if kind.keyed_by != keyed_by:
        raise ValueError(f"{read}: signal kind {kind.name!r} is keyed by {kind.keyed_by}, not {keyed_by}")
    return kind


def read_row_range(fs: pafs.FileSystem, blocks: Sequence[BlockMeta], lo: int, hi: int) -> pa.Table:
    """Values of the blocks overlapping row ids [lo, hi], sorted by row id."""
    kind = _one_signal(blocks, ROW, "read_range")
    parts = [read_block(fs, b.path, filters=[(ROW_ID, ">=", lo), (ROW_ID, "<=", hi)])
             for b in blocks if b.row_id_max >= lo and b.row_id_min <= hi]
    if not parts:
        return kind.schema().empty_table()
    t = pa.concat_tables(parts)
    return t.take(pc.sort_indices(t, sort_keys=[(ROW_ID, "ascending")]))


def entity_as_of(fs: pafs.FileSystem, blocks: Sequence[EntityBlockMeta], entity_ids: np.ndarray,
                 as_of: int | np.ndarray) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """The stored values an as-of read needs (a table) and, per asked entity, the row of it
    that answers (``pick``) and whether one does (``found``); see ``read_entity_as_of``."""
    if not blocks:
        raise ValueError("read_as_of: no blocks to read (the value's type, an embedding's dim, comes from them)")
    _one_signal(blocks, ENTITY_TIME, "read_as_of")
    ids = np.asarray(entity_ids, np.int64)
    at = np.broadcast_to(np.asarray(as_of, np.int64), ids.shape)
    wanted = np.unique(ids)
    t_max = int(at.max()) if ids.size else np.iinfo(np.int64).min
    chosen = [b for b in blocks if ids.size and b.entity_max >= wanted[0] and b.entity_min <= wanted[-1]
              and b.time_min <= t_max] or list(blocks[:1])  # none overlaps: one for the schema
    filters = [(ENTITY_ID, "in", wanted), (TIME, "<=", t_max)]
    table = pa.concat_tables([read_block(fs, b.path, filters=filters) for b in chosen])
    e, t = table.column(ENTITY_ID).to_numpy(), table.column(TIME).to_numpy()
    pick = np.zeros(len(ids), np.int64)
    if not len(e):
        return table, pick, np.zeros(len(ids), bool)
    order = np.lexsort((t, e))  # stable: equal (entity, time) keep block order
    # (entity, time) as one int64 key of their ranks: a plain int64 search (one over
    # structured records was ~10x slower); and each distinct asked key searched once, since a
    # batch asks for the same popular entity at the same stored time again and again
    ue, ut = np.unique(e), np.unique(t)
    stored = np.searchsorted(ue, e[order]) * len(ut) + np.searchsorted(ut, t[order])
    e_rank = np.minimum(np.searchsorted(ue, ids), len(ue) - 1)
    t_rank = np.searchsorted(ut, at, side="right") - 1  # the latest stored time <= asked
    found = (ue[e_rank] == ids) & (t_rank >= 0)
    keys, inverse = np.unique(e_rank[found] * len(ut) + t_rank[found], return_inverse=True)
    pos = (np.searchsorted(stored, keys, side="right") - 1)[inverse]  # the last stored pair <= asked
    hit = e[order][pos] == ids[found]  # else the entity has no value by then
    found[found] = hit
    pick[found] = order[pos[hit]]
    return table, pick, found


def read_entity_as_of(fs: pafs.FileSystem, blocks: Sequence[EntityBlockMeta], entity_ids: np.ndarray,
                      as_of: int | np.ndarray) -> pa.Table:
    """Per asked entity (in the order asked), its latest value at or before ``as_of`` (one
    time for all, or one per entity): columns entity_id, time (the value's), the value; time
    and value null where the entity has none by then. Of two values at the same entity and
    time, the later block's (blocks in the order given) wins."""
    table, pick, found = entity_as_of(fs, blocks, entity_ids, as_of)  # no blocks: a ValueError
    kind = _one_signal(blocks, ENTITY_TIME, "read_as_of")
    values = table.take(pa.array(pick, mask=~found))
    return pa.table({ENTITY_ID: pa.array(np.asarray(entity_ids, np.int64)), TIME: values.column(TIME),
                     kind.column: values.column(kind.column)})
