"""Open the experiment's click log, whatever its source, as a lazy Ray Dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recdistill.config import DataConfig, ExperimentConfig, to_dict
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
    from recdistill.data.synthetic import generate

    want = {k: to_dict(data)[k] for k in _GENERATION_KEYS}
    manifest = out / "_manifest.json"
    if manifest.is_file():
        have = json.loads(manifest.read_text()).get("data", {})
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
