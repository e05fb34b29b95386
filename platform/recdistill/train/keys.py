"""The teacher key: a hash of everything that decides a teacher's outputs.

Two experiments with the same key would train bit-for-bit the same teacher (up to
hardware numerics), so the second one reads the first one's signals instead. What goes
in: the whole data section (source, files, generation, preprocessing, splits, sampling),
a fingerprint of the input files (path, size, mtime) for real logs (valid and test files
and a glob's matches included), the teacher section, the seed, the number of teacher
workers (DDP changes the optimisation), the rows per signal block (the blocks' layout), the signal mode
(``teacher.signals``, left out when forward) and the store layout version. What stays out: students, distillation, device, run name, and
``teacher.history_fraction`` where it cannot change the teacher (``history_orders_teacher``):
the students of any cut read the signals of every window the teacher recorded.
``teacher.representations`` is in the key only when on, as the signal mode is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from recdistill.config import ExperimentConfig, signal_mode, to_dict
from recdistill.data.formats import TIMED_SOURCES, expand_paths
from recdistill.data.log import synthetic_identity

# 2: generations under each key, JSON spool schema (older stores' keys are not reused)
SIGNAL_FORMAT = 2


def _file_fingerprint(path: str | None) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file under a local or remote path, sorted."""
    if not path:
        return []
    import pyarrow.fs as pafs

    if "://" not in path:
        import glob

        if glob.has_magic(path):
            # a glob names no file itself: fingerprint the files it matches (as the reader does)
            return sorted(fp for p in expand_paths(path) for fp in _file_fingerprint(p))
    fs, root = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.Directory:
        infos = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                 if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))]
    else:
        infos = [info]
    return sorted((i.path, int(i.size or 0), int(i.mtime_ns or 0)) for i in infos)


def _data_identity(cfg: ExperimentConfig) -> dict[str, Any]:
    data = to_dict(cfg.data)
    if cfg.data.source == "synthetic":
        data["path"] = None  # where the log was generated does not change its rows
    # as teacher.representations: keys from before segments and scenarios stay valid
    data["synthetic"] = synthetic_identity(data["synthetic"])
    # a synthetic log is identified by its generation config (in ``data``); files are its output
    real = cfg.data.source != "synthetic"
    ident = {"format": SIGNAL_FORMAT, "data": data, "files": _file_fingerprint(cfg.data.path) if real else []}
    # the valid and test files decide what the teacher is scored on (and later stops on)
    for name in ("valid_path", "test_path"):
        if real and getattr(cfg.data, name):
            ident[f"{name}_files"] = _file_fingerprint(getattr(cfg.data, name))
    return ident


def _digest(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


def data_fingerprint(cfg: ExperimentConfig) -> str:
    """The identity of the rows a run reads (its data section and its input files)."""
    return _digest(_data_identity(cfg))


def history_orders_teacher(cfg: ExperimentConfig) -> bool:
    """Whether ``teacher.history_fraction`` changes what the teacher learns: only when the
    train split is shuffled within history and window (``data.shuffle`` window, which auto
    is for a log without time), since the cut then decides the order. Otherwise the teacher
    trains on the same rows in the same order whatever the cut, and records a signal for
    every row; the cut only says which rows the students take. A Parquet log may or may not
    have time: counted as ordered by the cut, which at worst retrains a teacher."""
    shuffle = cfg.data.shuffle
    if shuffle == "auto":
        return cfg.data.source not in TIMED_SOURCES
    return shuffle == "window"


def teacher_key(cfg: ExperimentConfig) -> str:
    teacher = to_dict(cfg.teacher)
    if not history_orders_teacher(cfg):
        del teacher["history_fraction"]
    if teacher["signals"] == "forward":  # the mode every key before it had: those stores stay valid
        del teacher["signals"]
    else:
        teacher["signals"] = "%s:%d" % signal_mode(teacher["signals"])  # crossfit = crossfit:5, one key
    if not teacher["representations"]:  # as signals: keys from before representations stay valid
        del teacher["representations"]
    if not teacher["semantic_ids"]["levels"]:
        del teacher["semantic_ids"]
    return _digest({**_data_identity(cfg), "teacher": teacher, "seed": cfg.run.seed,
                    "teacher_workers": cfg.platform.teacher_workers,
                    "signal_block_rows": cfg.platform.signal_block_rows})


# Stream settings that change what the online teacher learns (replay feeds it too);
# the rest (timeouts, baselines, checkpoint cadence) concern students or recovery only.
_TEACHER_STREAM_FIELDS = ("windows", "batch_windows", "batch_size", "teacher_update_interval", "shift_threshold", "shift_history",
                          "shift_top_k", "replay", "replay_ratio", "replay_hold", "replay_capacity")


def online_teacher_key(cfg: ExperimentConfig) -> str:
    """The key of a teacher that keeps learning over the stream: the batch teacher's
    identity plus the stream settings it trains under."""
    stream = to_dict(cfg.stream)
    return _digest({"teacher_key": teacher_key(cfg), "stream": {k: stream[k] for k in _TEACHER_STREAM_FIELDS}})


# Student fields a raw student (trained without the teacher) does not depend on.
_DISTILL_ONLY = ("name", "alpha", "seed_name", "unlabelled", "distill_from")


def raw_student_key(cfg: ExperimentConfig, i: int) -> str:
    """The identity of student ``i`` trained raw: its rows (data, the history cut, its
    sampling, its index, which seeds its sample and init) and its shape and optimiser.
    Nothing of the teacher or the distillation, so a sweep over α trains it once."""
    from recdistill.train.plan import seed_name

    student = {k: v for k, v in to_dict(cfg.students[i]).items() if k not in _DISTILL_ONLY}
    # a raw student that reads the teacher's representations depends on that teacher
    reads = student.pop("representations")
    if reads.get("code_fields") == "levels":  # the default: keys from before code_fields stay valid
        del reads["code_fields"]
    teacher = {"representations": reads, "teacher_key": teacher_key(cfg)} if reads["use"] or reads["codes"] else {}
    return _digest({**_data_identity(cfg), "raw_student": student, "seeds": seed_name(cfg, i), "seed": cfg.run.seed,
                    "history_fraction": cfg.teacher.history_fraction, **teacher})


def experts_key(cfg: ExperimentConfig) -> str:
    """A committee's experts: the data, which rows are the history (the cut and, where it
    orders them, the shuffle), how they are sliced, the experts' shape and schedule (the
    first student's) and the seed. Nothing of the teacher: every teacher's students share them."""
    from recdistill.train.committee import expert_config

    c = cfg.committee
    expert = {k: v for k, v in to_dict(expert_config(cfg)).items() if k not in _DISTILL_ONLY + ("representations",)}
    return _digest({**_data_identity(cfg), "experts": c.experts, "slice_by": c.slice_by, "expert": expert,
                    "history_fraction": cfg.teacher.history_fraction, "seed": cfg.run.seed})


def spool_key(cfg: ExperimentConfig) -> str:
    """The windowed, encoded log's identity: the data and how it is cut into windows (the
    vocabulary is fitted on the batch-phase windows)."""
    return _digest({**_data_identity(cfg), "windows": cfg.stream.windows, "batch_windows": cfg.stream.batch_windows})


# Data keys that size the hash tables from the statistics, not the statistics themselves.
_SIZING_ONLY = ("buckets", "buckets_per_distinct", "min_buckets", "hash_buckets")


def log_stats_key(cfg: ExperimentConfig, scope: str) -> str:
    """The identity of a log's statistics (``sizing``): the data without the keys that only
    use them, and what was measured (``scope``: the train split, or the whole log)."""
    ident = _data_identity(cfg)
    ident["data"] = {k: v for k, v in ident["data"].items() if k not in _SIZING_ONLY}
    return _digest({**ident, "scope": scope})
