"""Ray Data reading of real click logs: ``read_log`` and the datasource behind it.

Each read task streams its files through ``formats.iter_file`` (one ``RejectTally`` per
file). When a file is done its tally goes to the read's ``RejectLedger`` (one actor per
process holds every ledger it made), and the task fails at once if that file alone is over
the error budget. The driver checks the budget over all files with ``read_rejects(ledger)``
once the dataset has been consumed, since Ray Data reads lazily and in parallel.

Parquet ``row_id``s (the join key) must be unique over all files. A read task checks its
own file (``formats``); across files the ledger compares each file's id range with those
reported before it, and only when two ranges overlap does the later task read both files'
``row_id`` columns and intersect them. No ids travel to the driver, and files with disjoint
ranges (as recdistill writes them) cost nothing more.

    ledger = new_ledger()
    ds, schema = read_log("logs/*.txt", "criteo", ledger=ledger)
    ds = ds.materialize()
    read_rejects(ledger).check_budget(0.001, "logs/*.txt")
"""

from __future__ import annotations

import functools
import os
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, FileBasedDatasource, ReadTask

from recdistill.data import formats
from recdistill.data.byte_ranges import Piece, iter_piece, plan_file, splittable, survey_range
from recdistill.data.rejects import DataError, RejectTally, empty_file_error
from recdistill.data.schema import ROW_ID, LogSchema

if TYPE_CHECKING:
    import pyarrow

# A file larger than this is read by several tasks (platform.read_split_mb): parsing 64 MiB
# of TSV takes a core a few seconds, and a cluster's cores would otherwise wait on one task.
DEFAULT_SPLIT_BYTES = 64 << 20


def file_numbers(paths: list[str], offset: int) -> dict[str, int]:
    """Each file's number in ``row_id = file << 40 | line``: its place in sorted path order,
    after ``offset`` (a second read's files come after the first's)."""
    return {p: offset + i for i, p in enumerate(sorted(paths))}


class _Tallies:
    """One ledger's per-file reject tallies, kept by file path.

    Keyed by path so that a retried task, or a dataset executed twice, replaces its file's
    tally instead of counting the file again.
    """

    def __init__(self) -> None:
        self._by_file: dict[str, dict] = {}
        self._ranges: dict[str, tuple[int, int]] = {}  # parquet file -> (min, max) row_id

    def add(self, tally_dict: dict, part: str = "") -> list[str]:
        """Record a file's tally (or one ``part``, a byte range, of it); returns the files
        reported earlier whose row_id ranges overlap its own."""
        files = tally_dict.get("files") or ["<unknown>"]
        key = files[0] if len(files) == 1 else "|".join(files)
        self._by_file[f"{key}#{part}" if part else key] = tally_dict
        overlapping: set[str] = set()
        for path, (lo, hi) in tally_dict.get("id_ranges", {}).items():
            others = [p for p in self._ranges if p != path]
            if others:
                bounds = np.array([self._ranges[p] for p in others], dtype=np.int64)
                hit = (bounds[:, 0] <= hi) & (lo <= bounds[:, 1])
                overlapping.update(p for p, h in zip(others, hit) if h)
            self._ranges[path] = (int(lo), int(hi))
        return sorted(overlapping)

    def add_part(self, tally_dict: dict, part: str, parts: int) -> dict | None:
        """Record the tally of one byte range of a file; once all ``parts`` ranges of that file
        are in, return the file's whole tally (so that its budget is checked as a whole-file
        read checks it: a range is too small a sample to fail the file alone)."""
        self.add(tally_dict, part)
        file = (tally_dict.get("files") or ["<unknown>"])[0]
        mine = [v for k, v in self._by_file.items() if k.startswith(f"{file}#")]
        if len(mine) < parts:
            return None
        total = RejectTally()
        for d in mine:
            total.merge(RejectTally.from_dict(d))
        return total.to_dict()

    def tally(self) -> dict:
        total = RejectTally()
        for key in sorted(self._by_file):
            total.merge(RejectTally.from_dict(self._by_file[key]))
        return total.to_dict()


@ray.remote(num_cpus=0)
class RejectLedgers:
    """Every ledger of one process's reads, by ledger id. One actor per process that makes
    ledgers, not one per read: each actor is a Python process of its own (~1.3 CPU-s to
    start, ~130 MB), and a run made two or three ledgers (the suite started 62). Zero CPUs:
    it must not take a slot from the read tasks on a small machine."""

    def __init__(self) -> None:
        self._ledgers: dict[str, _Tallies] = {}

    def add(self, ledger: str, tally_dict: dict, part: str = "") -> list[str]:
        return self._ledgers.setdefault(ledger, _Tallies()).add(tally_dict, part)

    def add_part(self, ledger: str, tally_dict: dict, part: str, parts: int) -> dict | None:
        return self._ledgers.setdefault(ledger, _Tallies()).add_part(tally_dict, part, parts)

    def tally(self, ledger: str) -> dict:
        return self._ledgers.get(ledger, _Tallies()).tally()

    def drop(self, ledger: str) -> None:
        self._ledgers.pop(ledger, None)

    def ledgers(self) -> list[str]:
        return sorted(self._ledgers)


@dataclass(frozen=True)
class RejectLedger:
    """One read's ledger: its id in this process's ``RejectLedgers`` actor. Read tasks get a
    pickled copy; the ledger is dropped from the actor when the handle ``new_ledger`` made is
    garbage-collected in the process that made it."""

    actor: Any
    id: str

    def add(self, tally_dict: dict, part: str = "") -> Any:
        return self.actor.add.remote(self.id, tally_dict, part)

    def add_part(self, tally_dict: dict, part: str, parts: int) -> Any:
        return self.actor.add_part.remote(self.id, tally_dict, part, parts)

    def tally(self) -> Any:
        return self.actor.tally.remote(self.id)


_LEDGERS: tuple[tuple[str, str], Any] | None = None  # ((GCS address, job id), this process's RejectLedgers)


def _ledgers_actor() -> Any:
    """This process's ``RejectLedgers``, made on first use in each Ray session it joins (a
    process that restarts Ray, as the tests do, gets a new one)."""
    global _LEDGERS
    ctx = ray.get_runtime_context()
    session = (str(ctx.gcs_address), str(ctx.get_job_id()))
    if _LEDGERS is None or _LEDGERS[0] != session:
        _LEDGERS = (session, RejectLedgers.remote())
    return _LEDGERS[1]


def _drop(actor: Any, ledger: str) -> None:
    # Any call on an actor handle after ray.shutdown() starts Ray again (auto-init): a
    # submitted job's driver rejoined its cluster at exit that way and then died of a
    # segmentation fault, failing a job whose run had finished.
    if _LEDGERS is None or _LEDGERS[1] is not actor or not ray.is_initialized():
        return  # its Ray session ended, and the actor with it
    try:
        actor.drop.remote(ledger)
    except Exception:  # Ray is shutting down with the process: nothing left to drop
        pass


def new_ledger() -> RejectLedger:
    """A fresh ledger, in this process's ``RejectLedgers`` actor."""
    ledger = RejectLedger(_ledgers_actor(), uuid.uuid4().hex)
    # not at exit: the actor ends with this process's job, and Ray may be shut down by then
    weakref.finalize(ledger, _drop, ledger.actor, ledger.id).atexit = False
    return ledger


def read_rejects(ledger: RejectLedger) -> RejectTally:
    """All tallies the ledger has received so far, merged (call after consuming the dataset)."""
    return RejectTally.from_dict(ray.get(ledger.tally()))


class ClickLogDatasource(FileBasedDatasource):
    """Reads click-log files in one of ``formats.FORMATS`` into the canonical layout."""

    # Logs come as .txt, .csv, .data, .inter, .fm.txt, or with no extension at all.
    _FILE_EXTENSIONS = None

    def __init__(self, paths: list[str], fmt: str, *, header: str = "auto", error_budget: float = 0.001,
                 ledger: Any = None, num_fields: int | None = None, schema: LogSchema | None = None,
                 file_offset: int = 0, **file_based_datasource_kwargs: Any) -> None:
        super().__init__(paths, **file_based_datasource_kwargs)
        self._fmt = fmt
        self._header = header
        self._error_budget = error_budget
        self._ledger = ledger
        self._num_fields = num_fields
        self._log_schema = schema
        # Row ids encode the file's position in the sorted list, whichever task reads it;
        # ``file_offset`` numbers a second read's files (a valid or test path) after the first's.
        self._file_index = file_numbers(self._paths(), file_offset)

    def _index_of(self, path: str) -> int:
        index = self._file_index.get(path)
        if index is None:
            index = self._file_index.get(os.path.abspath(path))
        if index is None:
            raise DataError(f"{path}: not among the files this read was planned for")
        return index

    def _open_input_source(self, filesystem: Any, path: str, **open_args: Any) -> "pyarrow.NativeFile":
        if self._fmt == "parquet":
            # Parquet needs random access, the text formats a stream.
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f: "pyarrow.NativeFile", path: str) -> Iterator["pyarrow.Table"]:
        tally = RejectTally()
        yield from formats.iter_file(path, self._fmt, self._index_of(path), tally, self._header, f,
                                     num_fields=self._num_fields, schema=self._log_schema)
        overlapping = _report(self._ledger, tally)
        if overlapping:
            self._check_no_shared_ids(path, overlapping)
        tally.check_budget(self._error_budget, path)

    def _row_ids(self, path: str) -> np.ndarray:
        with self._filesystem.open_input_file(path) as f:
            col = pq.read_table(f, columns=[ROW_ID]).column(ROW_ID)
        return pc.drop_null(col).to_numpy().astype(np.int64, copy=False)

    def _check_no_shared_ids(self, path: str, others: list[str]) -> None:
        # Each file's ids are unique already (checked by its own read task).
        mine = self._row_ids(path)
        for other in others:
            common = np.intersect1d(mine, self._row_ids(other), assume_unique=True)
            if len(common):
                raise DataError(f"row_id {int(common[0])} occurs in both {other} and {path} "
                                f"({len(common):,} shared ids); row_id is the join key and must be unique "
                                f"over the input: was a file repeated or were two logs mixed?")


def _report(ledger: Any, tally: RejectTally, part: str = "") -> list[str]:
    """Send a read task's tally to the ledger (if any); the files whose row_id ranges overlap."""
    if ledger is None:
        return []
    # Wait for the ledger, so that everything is recorded once the dataset is consumed.
    return ray.get(ledger.add(tally.to_dict(), part))


class TextRangeDatasource(Datasource):
    """Text logs read as ``byte_ranges.Piece``s: a large file as several ranges, each its own
    read task, the others whole. Rows, ids, line numbers and rejects are those of a read of
    each file in one piece; the ledger keeps one tally per range, and the last range of a
    file to finish checks the file's error budget over all of them."""

    def __init__(self, pieces: list[Piece], fmt: str, *, file_index: dict[str, int], header: str,
                 error_budget: float, ledger: Any, num_fields: int | None) -> None:
        super().__init__()
        self._pieces, self._fmt, self._file_index = pieces, fmt, file_index
        self._header, self._error_budget, self._ledger, self._num_fields = header, error_budget, ledger, num_fields

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(p.nbytes for p in self._pieces)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        # One task per piece whatever ``parallelism`` asks: the pieces were cut for it.
        return [ReadTask(functools.partial(self._read, piece),
                         BlockMetadata(num_rows=None, size_bytes=piece.nbytes, input_files=[piece.path],
                                       exec_stats=None),
                         per_task_row_limit=per_task_row_limit)
                for piece in self._pieces]

    def _read(self, piece: Piece) -> Iterator["pyarrow.Table"]:
        tally = RejectTally()
        yield from iter_piece(piece, self._fmt, self._file_index[piece.path], tally, self._header, self._num_fields)
        if piece.whole:
            _report(self._ledger, tally)
            tally.check_budget(self._error_budget, piece.path)
            return
        # The last range of a file to finish checks the file's budget over all its ranges.
        whole = ray.get(self._ledger.add_part(tally.to_dict(), f"bytes={piece.start}-{piece.end}", piece.parts))
        if whole is not None:
            RejectTally.from_dict(whole).check_budget(self._error_budget, piece.path)


@ray.remote(num_cpus=1)
def _survey(path: str, lo: int, hi: int) -> tuple[int, int, int]:
    return survey_range(path, lo, hi)


# (path, size, mtime_ns, format, split_bytes) -> pieces: a run reads the same file several times
_PLANS: dict[tuple, list[Piece]] = {}


def plan_pieces(paths: list[str], fmt: str, split_bytes: int) -> list[Piece]:
    """Every file's pieces (``byte_ranges.plan_file``), the ranges surveyed by Ray tasks next
    to the data, not on the driver: the driver receives three integers per range."""
    out: list[Piece] = []
    for p in paths:
        st = os.stat(p)
        key = (p, st.st_size, st.st_mtime_ns, fmt, split_bytes)
        if key not in _PLANS:
            _PLANS[key] = plan_file(p, fmt, split_bytes,
                                    lambda ranges: ray.get([_survey.remote(*r) for r in ranges]))
        out.extend(_PLANS[key])
    return out


def read_log(path: str | list[str], fmt: str, *, header: str = "auto", error_budget: float = 0.001,
             ledger: Any = None, num_fields: int | None = None, schema: LogSchema | None = None,
             override_num_blocks: int | None = None, file_offset: int = 0,
             split_bytes: int = DEFAULT_SPLIT_BYTES) -> tuple[ray.data.Dataset, LogSchema]:
    """A lazy Ray Dataset of a click log (file, directory, glob or list of them) and its schema.

    Files are numbered in sorted path order from ``file_offset`` and ``row_id = file << 40 | line``,
    so reads of disjoint file sets with disjoint offset ranges never share an id.

    Missing, empty and (parquet) schema-less inputs fail here, before any task runs. A file
    over ``error_budget``, or a parquet ``row_id`` found twice, fails its read task; pass a ``ledger`` (``new_ledger()``) and call
    ``read_rejects(ledger).check_budget(...)`` after consumption for the budget over all files.

    An uncompressed Criteo or Avazu file larger than ``split_bytes`` is read as byte ranges of
    about that size, one read task each (``byte_ranges``); 0 reads every file whole.
    """
    if fmt not in formats.FORMATS:
        raise DataError(f"unknown log format {fmt!r}; expected one of {', '.join(formats.FORMATS)}")
    paths = formats.expand_paths(path)
    for p in paths:
        if os.path.getsize(p) == 0:
            raise empty_file_error(p, fmt)
    # One schema for all files: a libsvm field count or parquet schema from the first file;
    # MovieLens files must all find the same side files.
    log_schema = formats.schema_for_files(paths, fmt, schema=schema, num_fields=num_fields)
    if fmt == "libsvm":
        num_fields = len(log_schema.categorical)
    if fmt == "movielens":
        schema = log_schema  # each read task checks its file's side files still give it
    if fmt == "parquet":
        schema = log_schema
        if ledger is None and len(paths) > 1:
            ledger = new_ledger()  # the check that no row_id is in two files goes through it
    if any(splittable(p, fmt, split_bytes) for p in paths):
        pieces = plan_pieces(paths, fmt, split_bytes)
        if ledger is None:
            ledger = new_ledger()  # a file's ranges meet there for its error budget
        ranges = TextRangeDatasource(pieces, fmt, file_index=file_numbers(paths, file_offset), header=header, error_budget=error_budget,
                                     ledger=ledger, num_fields=num_fields)
        return ray.data.read_datasource(ranges, override_num_blocks=override_num_blocks or len(pieces)), log_schema
    source = ClickLogDatasource(paths, fmt, header=header, error_budget=error_budget, ledger=ledger,
                                num_fields=num_fields, schema=schema, file_offset=file_offset)
    # One read task per file already yields ~4 MiB blocks as it streams. Left to itself Ray
    # asks for >= 200 blocks and splits each task's output into ~2k-row slivers, one
    # downstream task each: 7x slower end to end on a 500k-row file (see benchmarks/).
    ds = ray.data.read_datasource(source, override_num_blocks=override_num_blocks or len(paths))
    return ds, log_schema
