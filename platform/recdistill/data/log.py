"""Open the experiment's click log, whatever its source, as a lazy Ray Dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recdistill.config import DataConfig, ExperimentConfig, to_dict
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
    """Model-ready, time-ordered splits of the experiment's log (lazy Ray Datasets)."""

    schema: LogSchema
    preprocessor: Preprocessor
    splits: dict[str, Any]  # "train", "valid", "test" → encoded Dataset
    ledger: Any  # RejectLedger: call rejects() after the splits were consumed

    def rejects(self) -> RejectTally:
        from recdistill.data.datasource import read_rejects

        return read_rejects(self.ledger)


def prepare_log(cfg: ExperimentConfig, *, progress: Any = None) -> PreparedLog:
    """Open → time splits → (vocabulary fitted on train only) → encode every split.

    The vocabulary never sees valid/test rows, so OOV rates on test are honest.
    """
    from recdistill.data.datasource import new_ledger
    from recdistill.data.preprocess import build_preprocessor, fit_vocab
    from recdistill.data.windows import time_splits

    ledger = new_ledger()
    ds, schema = open_log(cfg, ledger=ledger, progress=progress)
    raw = time_splits(ds, schema.order_column, cfg.data.splits)
    vocab = fit_vocab(raw["train"], schema, cfg.data.min_count) if cfg.data.encoding == "vocab" else None
    pre = build_preprocessor(schema, cfg.data, vocab)
    encoded = {name: split.map_batches(pre, batch_format="pyarrow") for name, split in raw.items()}
    return PreparedLog(schema, pre, encoded, ledger)
