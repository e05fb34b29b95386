"""Open the experiment's click log, whatever its source, as a lazy Ray Dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ConfigError, DataConfig, ExperimentConfig, to_dict
from recdistill.data.preprocess import Preprocessor
from recdistill.data.rejects import RejectTally
from recdistill.data.schema import LogSchema

# Keys of DataConfig that decide the synthetic log's bytes (the rest is preprocessing).
_GENERATION_KEYS = ("rows", "days", "seed", "shard_rows", "synthetic")


def synthetic_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.data.path) if cfg.data.path else cfg.run.out_dir / "data"


def ensure_synthetic(data: DataConfig, out: Path, progress: Any = None) -> bool:
    """Generate the synthetic log into ``out`` unless an identical one is already there.

    Returns True when it generated. Identity is the generation-relevant config recorded
    in the manifest, so a changed seed or size never silently reuses stale shards.
    """
    from recdistill.data.synthetic import generate, verified_manifest

    want = {k: to_dict(data)[k] for k in _GENERATION_KEYS}
    manifest = verified_manifest(out)  # None unless exactly the listed shards are there, whole
    if manifest is not None:
        have = manifest.get("data", {})
        if {k: have.get(k) for k in _GENERATION_KEYS} == want:
            return False
    generate(data, out, progress=progress)
    return True


def open_log(cfg: ExperimentConfig, *, ledger: Any = None, progress: Any = None) -> tuple[Any, LogSchema]:
    """The raw canonical log as a lazy Ray Dataset and its schema (synthetic: generated first)."""
    from recdistill.data.datasource import read_log

    from recdistill.data.sampling import negative_downsample

    data = cfg.data
    if data.valid_path or data.test_path:
        # the online pipeline cuts the one log it opens into time windows: split files would be ignored
        raise ConfigError("data.valid_path / data.test_path are read by the batch experiment (prepare_log) "
                          "only; the streaming pipeline (stream.enabled) needs the whole log in data.path")
    if data.source == "synthetic":
        out = synthetic_dir(cfg)
        ensure_synthetic(data, out, progress=progress)
        ds, schema = read_log(str(out), "parquet", error_budget=data.error_budget, ledger=ledger)
    else:
        ds, schema = read_log(data.path, data.source, header=data.header,
                              error_budget=data.error_budget, ledger=ledger)
    if data.negative_keep_rate < 1.0:
        ds = ds.map_batches(negative_downsample, batch_format="pyarrow",
                            fn_kwargs={"keep_rate": data.negative_keep_rate, "seed": data.seed})
    return ds, schema


@dataclass
class PreparedLog:
    """Model-ready splits of the experiment's log (Ray Datasets) and how they were made."""

    schema: LogSchema
    preprocessor: Preprocessor
    splits: dict[str, Any]  # "train" (tagged: windows.tag_history), "valid", "test" → encoded Dataset
    ledger: Any  # RejectLedger: call rejects() after the splits were consumed
    cfg: ExperimentConfig  # the config with every auto key resolved (sizing.resolve): train with this one
    shuffle: str = "none"  # the resolved data.shuffle the train split is ordered by
    split_sources: dict[str, str] = field(default_factory=dict)  # split → where its rows come from
    derived: dict[str, Any] = field(default_factory=dict)  # what sizing.resolve derived, from what

    def rejects(self) -> RejectTally:
        from recdistill.data.datasource import read_rejects

        return read_rejects(self.ledger)

    def describe(self) -> dict[str, Any]:
        """What results.json says about the data: the training order, where each split came
        from, and the test rows whose ids training never saw (one distributed pass)."""
        from recdistill.data.preprocess import oov_counts

        return {"shuffle": self.shuffle, "split_sources": dict(self.split_sources),
                "oov_test": oov_counts(self.splits["test"], self.preprocessor), "derived": self.derived}


def _split_paths(data: DataConfig) -> list[tuple[str, str]]:
    """(name, path) of every read, in file-numbering order: data.path, then valid, then test."""
    return [(name, p) for name, p in (("path", data.path), ("valid", data.valid_path), ("test", data.test_path)) if p]


def _path_cut(data: DataConfig) -> tuple[float, tuple[str, str], dict[str, str]]:
    """How data.path is cut when a valid or test path is given: the share of its rows (in
    time order) that is train, the split the rest is, and each split's source.

    data.path then holds only the splits without files, in the ratio of their data.splits
    fractions (see DataConfig.splits); with both files given it is all train."""
    f_train, f_valid, f_test = data.splits
    if data.valid_path and data.test_path:
        return 1.0, ("train", ""), {"train": "data.path", "valid": "data.valid_path", "test": "data.test_path"}
    if data.test_path:
        return f_train / (f_train + f_valid), ("train", "valid"), \
            {"train": "data.path", "valid": "data.path", "test": "data.test_path"}
    return f_train / (f_train + f_test), ("train", "test"), \
        {"train": "data.path", "valid": "data.valid_path", "test": "data.path"}


def _read_split_files(cfg: ExperimentConfig, ledger: Any) -> tuple[dict[str, Any], LogSchema]:
    """data.path, valid_path and test_path read with one ledger; each read's files are
    numbered after the previous read's, so row ids stay unique over all three."""
    from recdistill.data import formats
    from recdistill.data.datasource import read_log
    from recdistill.data.rejects import DataError

    data = cfg.data
    out: dict[str, Any] = {}
    first: LogSchema | None = None
    offset = 0
    for name, path in _split_paths(data):
        n_files = len(formats.expand_paths(path))
        num_fields = len(first.categorical) if first is not None and data.source == "libsvm" else None
        ds, schema = read_log(path, data.source, header=data.header, error_budget=data.error_budget,
                              ledger=ledger, num_fields=num_fields, file_offset=offset,
                              schema=first if data.source == "parquet" else None)
        if first is None:
            first = schema
        elif schema != first:
            raise DataError(f"data.{name}_path={path!r}: its schema differs from data.path's "
                            f"({schema.to_json()} vs {first.to_json()}); every split must have the same columns")
        out[name] = ds
        offset += n_files
    assert first is not None  # DataConfig.check requires data.path for real logs
    return out, first


def prepare_log(cfg: ExperimentConfig, *, progress: Any = None,
                log: Callable[[str], None] | None = None) -> PreparedLog:
    """Open → splits → auto keys resolved (``sizing``) → (vocabulary fitted on train only) →
    encode every split → train split tagged and ordered.

    Splits: data.valid_path / data.test_path where given, the rest cut from data.path in
    time order (``_path_cut``). The statistics pass and the vocabulary see the train split
    only, so OOV counts on test are honest. The train split is tagged history / students'
    window / recency (``windows.tag_history``), then data.shuffle orders it
    (``windows.shuffled_train``). ``PreparedLog.cfg`` is the resolved config: the engines
    train with it and write it as config.yaml.
    """
    from recdistill.data.datasource import new_ledger
    from recdistill.data.preprocess import build_preprocessor, fit_vocab
    from recdistill.data.sampling import negative_downsample
    from recdistill.data.windows import resolve_shuffle, shuffled_train, tag_history, time_splits, two_way_split
    from recdistill.train.plan import recent_cuts

    data = cfg.data
    ledger = new_ledger()
    if data.source == "synthetic" or not (data.valid_path or data.test_path):
        ds, schema = open_log(cfg, ledger=ledger, progress=progress)
        sources = {"train": "data.path", "valid": "data.path", "test": "data.path"}
        raw = time_splits(ds, schema.order_column, data.splits)
    else:
        reads, schema = _read_split_files(cfg, ledger)
        if data.negative_keep_rate < 1.0:
            reads = {k: v.map_batches(negative_downsample, batch_format="pyarrow",
                                      fn_kwargs={"keep_rate": data.negative_keep_rate, "seed": data.seed})
                     for k, v in reads.items()}
        share, (first, rest), sources = _path_cut(data)
        # all of data.path is train when both other splits have files: no cut to compute
        raw = {first: reads["path"]} if not rest else \
            dict(zip((first, rest), two_way_split(reads["path"], schema.order_column, share)))
        raw.update({name: reads[name] for name in ("valid", "test") if name in reads})
    cfg, derived = _resolve_auto(cfg, schema, raw, log)
    data = cfg.data
    vocab = fit_vocab(raw["train"], schema, data.min_count) if data.encoding == "vocab" else None
    pre = build_preprocessor(schema, data, vocab)
    encoded = {name: split.map_batches(pre, batch_format="pyarrow") for name, split in raw.items()}
    shuffle = resolve_shuffle(data.shuffle, schema.has_ts)
    cuts = recent_cuts(cfg)
    if shuffle != "none":
        encoded["train"] = shuffled_train(encoded["train"], schema.order_column, cfg.teacher.history_fraction,
                                          shuffle, data.seed, cuts)
    else:
        encoded["train"], _ = tag_history(encoded["train"], schema.order_column, cfg.teacher.history_fraction, cuts)
    return PreparedLog(schema, pre, encoded, ledger, cfg, shuffle, sources, derived)


def _resolve_auto(cfg: ExperimentConfig, schema: LogSchema, raw: dict[str, Any],
                  log: Callable[[str], None] | None) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config with its auto keys sized by the train split (one cached pass; none when
    nothing is auto)."""
    from recdistill import sizing

    if not sizing.needs_pass(cfg):
        return cfg, {}
    fields = sizing.sketched_fields(cfg, schema)
    stats = _synthetic_stats(cfg) if not fields else None
    if stats is None:
        stats = sizing.cached_stats(cfg, fields, lambda: sizing.measure(raw["train"], raw["valid"], fields))
    return sizing.resolve_and_print(cfg, stats, log or print)


def _synthetic_stats(cfg: ExperimentConfig) -> Any:
    """A synthetic log's split sizes from its manifest (rows and positives as generated; the
    time splits cut equal-count quantiles), so sizing it needs no pass; None for other logs."""
    from recdistill import sizing
    from recdistill.data.synthetic import verified_manifest

    if cfg.data.source != "synthetic":
        return None
    manifest = verified_manifest(synthetic_dir(cfg))
    if manifest is None:
        return None
    rows, positives = manifest["summary"]["rows"], manifest["summary"]["positives"]
    keep = cfg.data.negative_keep_rate  # the experiment's own down-sampling, after generation
    rows = positives + (rows - positives) * keep
    f_train, f_valid, _ = cfg.data.splits
    return sizing.TrainStats(int(round(rows * f_train)), int(round(positives * f_train)), int(round(rows * f_valid)))
