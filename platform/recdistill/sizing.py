"""Defaults sized by the data: one statistics pass over the train split resolves every
``auto`` key of a config into a number before anything trains.

- ``data.buckets: auto``: each hashed field gets ``buckets_per_distinct`` × its distinct ids
  (HyperLogLog over the train split), at least ``min_buckets`` and at most ``hash_buckets``.
  A field whose cardinality the schema knows (synthetic ids, identity-encoded) or that the
  vocabulary encodes needs no sketch. Before this, a field the reader knew nothing about got
  1,000,003 buckets: 80M parameters for 5k ids.
- batch size, epochs, validation cadence, patience and learning rates of the teacher and each
  student: ``train.schedule.default_schedule`` of the rows that model trains on.

The pass (rows, positives, sketches) is skipped when nothing is ``auto``, so the resolved
config.yaml of a run repeats it without it; its result is cached in the signal store under
the data's identity, so a sweep measures a log once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.config import ConfigError, ExperimentConfig, StudentConfig, TeacherConfig
from recdistill.data.distinct import estimate, registers
from recdistill.data.preprocess import FIRST_ID, identity_encoded
from recdistill.data.schema import LABEL, LogSchema
from recdistill.train.schedule import default_schedule, steps_per_pass

AUTO = "auto"
_SCHEDULE_KEYS = ("batch_size", "epochs", "eval_every", "patience", "lr", "embedding_lr")


@dataclass
class TrainStats:
    """What the defaults are sized by: the train split's rows and positives, the valid split's
    rows and the distinct ids of each field that is hashed."""

    train_rows: int
    positives: int
    valid_rows: int
    distinct: dict[str, int] = field(default_factory=dict)


def _partial(batch: pa.Table, fields: tuple[str, ...]) -> dict[str, Any]:
    return {"rows": batch.num_rows, "positives": int(pc.sum(batch.column(LABEL)).as_py() or 0),
            "hll": {name: registers(batch.column(name)) for name in fields}}


def _combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"rows": a["rows"] + b["rows"], "positives": a["positives"] + b["positives"],
            "hll": {k: np.maximum(a["hll"][k], b["hll"][k]) for k in a["hll"]}}


def _count(batch: pa.Table) -> int:
    return batch.num_rows


def measure(train: Any, valid: Any | None, fields: tuple[str, ...]) -> TrainStats:
    """One distributed pass over the raw train split (rows, positives, HyperLogLog per field;
    block partials merged on the driver, no rows gathered) and a count of the valid split."""
    from recdistill.data.reduce import reduce_blocks

    st = reduce_blocks(train, _partial, _combine, {"fields": fields})
    if st is None or not st["rows"]:
        raise ValueError("the train split has no rows: check data.path, data.splits and the reject report")
    valid_rows = (reduce_blocks(valid, _count, lambda a, b: a + b) or 0) if valid is not None else 0
    return TrainStats(st["rows"], st["positives"], int(valid_rows),
                      {k: int(round(estimate(r))) for k, r in st["hll"].items()})


def needs_pass(cfg: ExperimentConfig) -> bool:
    models = [cfg.teacher, *cfg.students]
    return cfg.data.buckets == AUTO or any(getattr(m, k) == AUTO for m in models for k in _SCHEDULE_KEYS)


def sketched_fields(cfg: ExperimentConfig, schema: LogSchema) -> tuple[str, ...]:
    """Fields whose bucket count the pass decides: hashed, with no cardinality known."""
    if cfg.data.buckets != AUTO or cfg.data.encoding != "hash":
        return ()
    return tuple(c for c in schema.categorical if not identity_encoded(schema, c, cfg.data.hash_buckets))


def field_buckets(cfg: ExperimentConfig, distinct: dict[str, int]) -> dict[str, int]:
    d = cfg.data
    return {name: int(min(d.hash_buckets, max(d.min_buckets, math.ceil(d.buckets_per_distinct * n) + FIRST_ID)))
            for name, n in distinct.items()}


def _model_rows(stats: TrainStats, share: float, negative_keep: float) -> int:
    pos = stats.positives * share
    return max(1, int(round(pos + (stats.train_rows * share - pos) * negative_keep)))


def _resolve_model(m: TeacherConfig | StudentConfig, rows: int, has_valid: bool) -> tuple[Any, dict[str, Any]]:
    rule = default_schedule(rows, has_valid, {k: getattr(m, k) for k in ("batch_size", "epochs")
                                              if getattr(m, k) != AUTO}, teacher=isinstance(m, TeacherConfig))
    chosen = {k: (getattr(rule, k) if getattr(m, k) == AUTO else getattr(m, k)) for k in _SCHEDULE_KEYS}
    derived = {"rows": rows, **chosen, "steps_per_epoch": steps_per_pass(rows, chosen["batch_size"]),
               "auto": [k for k in _SCHEDULE_KEYS if getattr(m, k) == AUTO]}
    return dataclasses.replace(m, **chosen), derived


def resolve(cfg: ExperimentConfig, stats: TrainStats) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config with every ``auto`` replaced by its value, and what was derived from what."""
    derived: dict[str, Any] = {"train_rows": stats.train_rows, "valid_rows": stats.valid_rows,
                               "positives": stats.positives}
    data = cfg.data
    if data.buckets == AUTO and stats.distinct:
        sizes = field_buckets(cfg, stats.distinct)
        derived["buckets"] = {name: {"distinct": stats.distinct[name], "buckets": sizes[name]} for name in sizes}
        data = dataclasses.replace(data, buckets=sizes)
    elif data.buckets == AUTO:
        data = dataclasses.replace(data, buckets="max")  # nothing hashed: no size to choose
    has_valid = stats.valid_rows > 0
    t = cfg.teacher
    teacher, derived["teacher"] = _resolve_model(t, _model_rows(stats, t.sampling_ratio, t.negative_keep_rate),
                                                 has_valid)
    check_codebook_history(cfg, derived["teacher"]["rows"], teacher.batch_size)
    students, derived["students"] = [], {}
    for s in cfg.students:
        resolved, derived["students"][s.name] = _resolve_model(
            s, _model_rows(stats, s.sampling_ratio, s.negative_keep_rate), has_valid)
        students.append(resolved)
    return dataclasses.replace(cfg, data=data, teacher=teacher, students=students), derived


def check_codebook_history(cfg: ExperimentConfig, teacher_rows: int, batch_size: int) -> None:
    """Semantic IDs are fitted on the representation blocks that end inside the teacher's
    history (``signals.semantic_ids.quantise_store``). Fail before the teacher trains, not after,
    when each teacher worker's share of its history is shorter than one signal block."""
    if not cfg.teacher.semantic_ids.levels:
        return
    history = int(teacher_rows * cfg.teacher.history_fraction) // max(1, cfg.platform.teacher_workers)
    block = max(1, cfg.platform.signal_block_rows // batch_size) * batch_size  # a block ends every this many rows
    if history < block:
        fit = max(batch_size, history // 4 // batch_size * batch_size)
        raise ConfigError(
            f"teacher.semantic_ids.levels={cfg.teacher.semantic_ids.levels}: the teacher's history holds about "
            f"{history:,} rows per worker, fewer than one signal block ({block:,} rows: platform.signal_block_rows="
            f"{cfg.platform.signal_block_rows} at batch {batch_size}), so no representation block would end inside "
            f"it and the codebook would have nothing to fit on. Set platform.signal_block_rows={fit} (a quarter of "
            f"the history) or give the teacher a longer history (teacher.history_fraction)")


def resolve_and_print(cfg: ExperimentConfig, stats: TrainStats,
                      log: Callable[[str], None]) -> tuple[ExperimentConfig, dict[str, Any]]:
    """``resolve``, with the start-up lines (``describe``) sent to ``log``."""
    resolved, derived = resolve(cfg, stats)
    for line in describe(derived):
        log(line)
    return resolved, derived


def describe(derived: dict[str, Any]) -> list[str]:
    """Start-up lines: what each model got, and the hash sizes."""
    out = [f"[defaults] train split {derived['train_rows']:,} rows, valid {derived['valid_rows']:,}: "
           f"auto keys sized by the rule in train/schedule.py (written into config.yaml)"]
    models = [("teacher", derived["teacher"]), *derived["students"].items()]
    for name, d in models:
        if d["auto"]:
            out.append(f"[defaults] {name}: {d['rows']:,} rows → batch {d['batch_size']}, ≤{d['epochs']} epochs of "
                       f"{d['steps_per_epoch']:,} steps, eval_every {d['eval_every'] or 'epoch'}, patience "
                       f"{d['patience']}, lr {d['lr']:g}/{d['embedding_lr']:g} (auto: {', '.join(d['auto'])})")
    if "buckets" in derived:
        b = derived["buckets"]
        total = sum(v["buckets"] for v in b.values())
        shown = ", ".join(f"{k} {v['distinct']:,}→{v['buckets']:,}" for k, v in list(b.items())[:8])
        more = f" and {len(b) - 8} more" if len(b) > 8 else ""
        out.append(f"[defaults] hash buckets (distinct≈→buckets): {shown}{more}; {total:,} rows of embeddings in all")
    return out


def cached_stats(cfg: ExperimentConfig, fields: tuple[str, ...], compute: Callable[[], TrainStats],
                 scope: str = "train split") -> TrainStats:
    """``compute()`` unless the signal store holds this log's stats (of ``scope``: what was
    measured) with these fields."""
    from recdistill.train.keys import log_stats_key
    from recdistill.signals.store import SignalStore

    hit = stored_stats(cfg, fields, scope)
    if hit is not None:
        return hit
    stats = compute()
    store = SignalStore(cfg.platform.signal_store)
    store.write_json(f"{store.root}/_log_stats/{log_stats_key(cfg, scope)}.json", dataclasses.asdict(stats))
    return stats


def stored_stats(cfg: ExperimentConfig, fields: tuple[str, ...] | None,
                 scope: str = "train split") -> TrainStats | None:
    """The statistics an earlier run of this log kept in the store (``cached_stats``), with
    ``fields`` sketched (None: those it sketched); None when there are none: no pass here."""
    from recdistill.signals.store import SignalStore
    from recdistill.train.keys import log_stats_key

    store = SignalStore(cfg.platform.signal_store)
    hit = store.read_json(f"{store.root}/_log_stats/{log_stats_key(cfg, scope)}.json")
    distinct = (hit or {}).get("distinct", {})
    if hit is None or (fields is not None and not set(fields) <= set(distinct)):
        return None
    return TrainStats(hit["train_rows"], hit["positives"], hit["valid_rows"],
                      {k: distinct[k] for k in (distinct if fields is None else fields)})


def resolve_for_stream(cfg: ExperimentConfig, log: Callable[[str], None]) -> ExperimentConfig:
    """The online pipeline's config with its auto keys resolved: sized by the batch phase's
    share of the log (``stream.batch_windows`` of ``stream.windows``), which is what a model
    trains on before the stream; no valid split there, so no early stopping."""
    from recdistill.data.log import open_log

    if not needs_pass(cfg):
        return cfg
    ds, schema = open_log(cfg)
    fields = sketched_fields(cfg, schema)
    stats = cached_stats(cfg, fields, lambda: measure(ds, None, fields), scope="whole log")
    share = cfg.stream.batch_windows / cfg.stream.windows
    phase = TrainStats(max(1, int(stats.train_rows * share)), int(stats.positives * share), 0, stats.distinct)
    return resolve_and_print(cfg, phase, log)[0]
