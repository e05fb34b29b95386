"""Open the experiment's click log, whatever its source, as a lazy Ray Dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recdistill.config import ConfigError, DataConfig, ExperimentConfig, to_dict
from recdistill.data.schema import LogSchema

# Keys of DataConfig that decide the synthetic log's bytes (the rest is preprocessing).
_GENERATION_KEYS = ("rows", "days", "seed", "shard_rows", "synthetic")


def synthetic_identity(syn: dict[str, Any]) -> dict[str, Any]:
    """A synthetic config (as a dict) as it identifies a log: segments and scenarios that are
    off drop their keys, which a log (and a key) made before they existed lacks: it is the
    same log."""
    unset = (("segments", "segment_strength") if not syn.get("segments") else ()) + (
        ("scenarios",) if not syn.get("scenarios") else ())
    return {k: v for k, v in syn.items() if k not in unset}


def _generation(data: dict[str, Any]) -> dict[str, Any]:
    """What decides a synthetic log's bytes (``synthetic_identity``)."""
    out = {k: data.get(k) for k in _GENERATION_KEYS}
    if isinstance(out.get("synthetic"), dict):
        out["synthetic"] = synthetic_identity(out["synthetic"])
    return out


def synthetic_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.data.path) if cfg.data.path else cfg.run.out_dir / "data"


def ensure_synthetic(data: DataConfig, out: Path, progress: Any = None) -> bool:
    """Generate the synthetic log into ``out`` unless an identical one is already there.

    Returns True when it generated. Identity is the generation-relevant config recorded
    in the manifest, so a changed seed or size never silently reuses stale shards.
    """
    from recdistill.data.synthetic import generate, verified_manifest

    want = _generation(to_dict(data))
    manifest = verified_manifest(out)  # None unless exactly the listed shards are there, whole
    if manifest is not None and _generation(manifest.get("data", {})) == want:
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
        ds, schema = read_log(data.path, data.source, header=data.header, error_budget=data.error_budget,
                              ledger=ledger, split_bytes=cfg.platform.read_split_mb << 20)
    if data.negative_keep_rate < 1.0:
        ds = ds.map_batches(negative_downsample, batch_format="pyarrow",
                            fn_kwargs={"keep_rate": data.negative_keep_rate, "seed": data.seed})
    return ds, schema


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
                              schema=first if data.source == "parquet" else None,
                              split_bytes=cfg.platform.read_split_mb << 20)
        if first is None:
            first = schema
        elif schema != first:
            raise DataError(f"data.{name}_path={path!r}: its schema differs from data.path's "
                            f"({schema.to_json()} vs {first.to_json()}); every split must have the same columns")
        out[name] = ds
        offset += n_files
    assert first is not None  # DataConfig.check requires data.path for real logs
    return out, first


def log_files(cfg: ExperimentConfig) -> tuple[list[str], str]:
    """Every file the experiment's log reads (data.path, valid_path, test_path) and their format."""
    from recdistill.data import formats

    data = cfg.data
    if data.source == "synthetic":
        return formats.expand_paths(str(synthetic_dir(cfg))), "parquet"
    return [f for _, p in _split_paths(data) for f in formats.expand_paths(p)], data.source


def raw_splits(cfg: ExperimentConfig, ledger: Any, progress: Any = None, memo: Any = None, hold: Any = None
               ) -> tuple[dict[str, Any], LogSchema, dict[str, str], Any]:
    """The raw (not yet encoded) train/valid/test splits, lazy, with the schema, where
    each split's rows come from: data.valid_path / data.test_path where given, the rest cut
    from data.path in time order (``_path_cut``), and where the train split lies in
    data.path's rows (``windows.Below``; None when it is all of them). A ``hold``
    (``data.hold.LogHold``) decides whether the files are read once into the object store
    before any cut."""
    from recdistill.data.sampling import negative_downsample
    from recdistill.data.windows import time_splits_below, two_way_split

    data = cfg.data
    if data.source == "synthetic" or not (data.valid_path or data.test_path):
        ds, schema = open_log(cfg, ledger=ledger, progress=progress)
        if hold is not None:
            ds = hold.apply({"path": ds}, *log_files(cfg))["path"]
        sources = {"train": "data.path", "valid": "data.path", "test": "data.path"}
        splits, below = time_splits_below(ds, schema.order_column, data.splits, memo)
        return splits, schema, sources, below
    reads, schema = _read_split_files(cfg, ledger)
    if data.negative_keep_rate < 1.0:
        reads = {k: v.map_batches(negative_downsample, batch_format="pyarrow",
                                  fn_kwargs={"keep_rate": data.negative_keep_rate, "seed": data.seed})
                 for k, v in reads.items()}
    if hold is not None:
        reads = hold.apply(reads, *log_files(cfg))
    share, (first, rest), sources = _path_cut(data)
    # all of data.path is train when both other splits have files: no cut to compute
    below = None
    if rest:
        parts, below = two_way_split(reads["path"], schema.order_column, share, memo)
        raw = dict(zip((first, rest), parts))
    else:
        raw = {first: reads["path"]}
    raw.update({name: reads[name] for name in ("valid", "test") if name in reads})
    return raw, schema, sources, below
