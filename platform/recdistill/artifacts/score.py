"""``recdistill score MODEL_DIR LOG``: a model artifact scores a click log on Ray.

Ray Data reads the log with the format's reader and encodes it with the artifact's own
preprocessing; a ``map_batches`` actor pool (one GPU per actor where the cluster has
GPUs) runs the model. Out come ``(row_id, logit, p)`` with p in population space (the
training down-sampling undone, ``model_dir.sampling_record``), and, when the log has
labels, AUC, LogLoss and calibration reduced block by block (nothing row-level reaches the
driver). ``--split test`` re-cuts the run's own log as the run did, so scoring a run's
test split gives its results.json figures back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import torch

from recdistill.artifacts.model_dir import Artifact, ArtifactError, load_artifact, unpacked
from recdistill.data.in_order import materialize_in_order
from recdistill.data.reduce import add_sparse, reduce_blocks
from recdistill.data.schema import LABEL, ROW_ID, LogSchema
from recdistill.metrics import auc_bins, log_loss_sum

SPLITS = ("all", "train", "valid", "test")
_BINS = 1 << 20  # the engines' StreamingAUC resolution, so a run's AUC comes back to 1e-6


class ScoreError(ValueError):
    """A log that the artifact cannot score: names what was expected and what was found."""


def expected_format(artifact: Artifact) -> str:
    """The format a model's training log was read in (the synthetic log is Parquet)."""
    source = artifact.provenance.get("data", {}).get("source") or artifact.preprocessor.schema.source
    return "parquet" if source in ("synthetic", "", None) else source


def check_format(artifact: Artifact, fmt: str) -> None:
    """Parquet (the canonical layout any log can be saved in) is always accepted; another
    format must be the one the model trained on."""
    want = expected_format(artifact)
    if fmt != want and fmt != "parquet":
        raise ScoreError(f"{artifact.directory}: the model was trained on a {want!r} log; --format {fmt!r} was given "
                         f"(use --format {want}, or a Parquet file in the canonical layout)")


def check_fields(artifact: Artifact, found: LogSchema, log_path: str) -> None:
    """The log's feature columns must be the model's: name the missing and the extra ones."""
    want = artifact.preprocessor.schema
    reads = artifact.config.get("representations")
    if reads:
        parts = [*reads.get("use", []), *(f"{p} semantic ID" for p in reads.get("codes", []))]
        raise ScoreError(f"{artifact.directory}: the model reads the teacher's stored representations "
                         f"({', '.join(parts)}; model.json 'representations') as extra inputs, which a log's rows "
                         f"do not carry: scoring it needs the rows joined with them (signals.representations), "
                         f"which `recdistill score` does not do yet")

    def cols(s: LogSchema) -> dict[str, str]:
        return {**{n: "dense" for n in s.dense}, **{n: "categorical" for n in s.categorical},
                **{n: "sequence" for n, _ in s.sequences}}

    have, need = cols(found), cols(want)
    missing = [f"{n} ({k})" for n, k in need.items() if n not in have]
    extra = [f"{n} ({k})" for n, k in have.items() if n not in need]
    wrong = [f"{n} (model: {k}, log: {have[n]})" for n, k in need.items() if n in have and have[n] != k]
    if missing or wrong:
        raise ScoreError(f"{log_path}: its fields do not match the model's feature spec ({artifact.directory}): "
                         + "; ".join(part for part in (
                             f"missing {len(missing)}: {', '.join(missing)}" if missing else "",
                             f"extra {len(extra)}: {', '.join(extra)}" if extra else "",
                             f"of another kind: {', '.join(wrong)}" if wrong else "") if part))


def artifact_files(directory: Path) -> dict[str, bytes]:
    """The artifact's files as bytes, for the scoring actors: on a cluster they run on nodes
    that cannot read the driver's disk."""
    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file()}


def actor_device() -> torch.device:
    """The GPU when Ray gave this actor one, else the CPU. Ray leaves a zero-GPU actor the
    node's CUDA_VISIBLE_DEVICES, so it would otherwise see every GPU and load its model on
    one that a Train worker holds, without a reservation."""
    import ray

    return torch.device("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")


class Scorer:
    """The actor of the scoring pool: rebuilds the artifact from its files once, then turns
    encoded batches into (row_id, logit, p[, label, p_metrics])."""

    def __init__(self, files: Any, metrics_shift: float) -> None:
        """``files``: the artifact's files (``artifact_files``), or an ObjectRef of them."""
        import ray

        if isinstance(files, ray.ObjectRef):
            files = ray.get(files)
        with unpacked(files) as d:
            self.art = load_artifact(d)
        self.device = actor_device()
        self.model = self.art.model.to(self.device)
        self.shift = float(self.art.sampling["population_logit_shift"])
        self.metrics_shift = metrics_shift

    def __call__(self, batch: pa.Table) -> pa.Table:
        from recdistill.data.tensors import from_table

        b = from_table(_with_label(batch), self.art.preprocessor.schema, self.art.seq_len).to(self.device)
        with torch.no_grad():
            z = self.model(b.cat, b.dense, b.seq)[0].float()
        cols = {ROW_ID: batch.column(ROW_ID), "logit": pa.array(z.cpu().numpy()),
                "p": pa.array(torch.sigmoid(z + self.shift).cpu().numpy())}
        if LABEL in batch.column_names:
            cols[LABEL] = batch.column(LABEL)
            # as the engines' Evaluator computes it: float32 sigmoid, then float64
            cols["_p_metrics"] = pa.array(torch.sigmoid(z + self.metrics_shift).cpu().numpy().astype(np.float64))
        return pa.table(cols)


def _with_label(batch: pa.Table) -> pa.Table:
    """``from_table`` reads a label column: an unlabelled log gets zeros (not reported)."""
    if LABEL in batch.column_names:
        return batch
    return batch.append_column(LABEL, pa.array(np.zeros(batch.num_rows, np.int8)))


def _metric_partial(batch: pa.Table) -> dict[str, Any]:
    """One block's share of AUC (sparse histograms of p), LogLoss and calibration sums."""
    y = batch.column(LABEL).to_numpy().astype(bool)
    p = batch.column("_p_metrics").to_numpy()
    idx = auc_bins(p, _BINS)
    return {"pos": np.unique(idx[y], return_counts=True), "neg": np.unique(idx[~y], return_counts=True),
            "ll": log_loss_sum(y, p), "n": int(y.size),
            "sum_p": float(p.sum()), "sum_y": float(y.sum())}


def _combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"pos": add_sparse(a["pos"], b["pos"]), "neg": add_sparse(a["neg"], b["neg"]), "ll": a["ll"] + b["ll"],
            "n": a["n"] + b["n"], "sum_p": a["sum_p"] + b["sum_p"], "sum_y": a["sum_y"] + b["sum_y"]}


def labelled_metrics(scored: Any) -> dict[str, Any] | None:
    """AUC, LogLoss and calibration of a Dataset of ``Scorer`` outputs with labels, folded
    block by block (None when it has no rows)."""
    acc = reduce_blocks(scored.select_columns([LABEL, "_p_metrics"]), _metric_partial, _combine)
    return _metrics(acc) if acc is not None else None


def _metrics(acc: dict[str, Any]) -> dict[str, Any]:
    from recdistill.metrics import StreamingAUC

    h = StreamingAUC(_BINS)
    h.pos[acc["pos"][0]] = acc["pos"][1]
    h.neg[acc["neg"][0]] = acc["neg"][1]
    return {"auc": h.auc(), "logloss": acc["ll"] / acc["n"] if acc["n"] else float("nan"),
            "calibration": acc["sum_p"] / acc["sum_y"] - 1 if acc["sum_y"] > 0 else float("nan"), "rows": acc["n"]}


@dataclass
class ScoreResult:
    rows: int
    metrics: dict[str, Any] | None  # None when the log has no labels
    unseen: dict[str, Any]  # rows whose id the model's encoding never saw, per field
    rejects: dict[str, Any]
    out: str | None
    split: str


def _read(artifact: Artifact, log_path: str, fmt: str, split: str, header: str, error_budget: float,
          ledger: Any) -> tuple[Any, LogSchema, bool]:
    """The rows to score (raw, canonical), their schema, and whether they went through the
    run's own negative down-sampling (``--split`` re-cuts the log as the run did)."""
    from recdistill.data.datasource import read_log

    want = artifact.preprocessor.schema
    num_fields = len(want.categorical) if fmt == "libsvm" else None
    if split == "all":
        ds, schema = read_log(log_path, fmt, header=header, error_budget=error_budget, ledger=ledger,
                              num_fields=num_fields)
        return ds, schema, False
    data = artifact.provenance.get("data")
    if not data:
        raise ScoreError(f"{artifact.directory}: --split needs the run's data config in provenance.json, which this "
                         f"artifact lacks; score the split's own file with --split all")
    from recdistill.config import config_from_dict
    from recdistill.data.log import raw_splits

    if data.get("valid_path") or data.get("test_path"):
        raise ScoreError(f"{artifact.directory}: its run read its splits from separate files (data.valid_path / "
                         f"data.test_path): score that file with --split all")
    cfg = config_from_dict({"data": {**data, "source": fmt if fmt != "parquet" or data["source"] != "synthetic"
                                     else "parquet", "path": log_path, "header": header}})
    raw, schema, _, _ = raw_splits(cfg, ledger)
    return raw[split], schema, cfg.data.negative_keep_rate < 1.0


def score(model_dir: str | Path, log_path: str, fmt: str, *, out: str | None = None, split: str = "all",
          header: str = "auto", error_budget: float = 0.001, batch_size: int = 16_384,
          log: Callable[[str], None] = print) -> ScoreResult:
    """Score ``log_path`` with the artifact in ``model_dir``; see the module docstring."""
    import ray

    from recdistill.data.datasource import new_ledger, read_rejects
    from recdistill.data.preprocess import oov_counts

    if split not in SPLITS:
        raise ScoreError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    artifact = load_artifact(model_dir)
    check_format(artifact, fmt)
    ledger = new_ledger()
    raw, schema, downsampled = _read(artifact, log_path, fmt, split, header, error_budget, ledger)
    check_fields(artifact, schema, log_path)
    pre = artifact.preprocessor
    log(f"[score] {artifact.manifest['name']} ({artifact.config['arch']}, {artifact.model.num_params():,} params) "
        f"on {log_path} ({fmt}, rows: {split})")
    encoded = materialize_in_order(raw.map_batches(pre, batch_format="pyarrow"))
    unseen = oov_counts(encoded, pre)
    # metrics are on the rows as they are: a re-cut split kept the run's own down-sampling
    shift = artifact.sampling["population_logit_shift"] - (
        math.log(artifact.sampling["data_negative_keep"]) if downsampled else 0.0)
    gpus = ray.cluster_resources().get("GPU", 0)
    workers = max(1, int(gpus) if gpus else min(4, int(ray.cluster_resources().get("CPU", 1)) // 2 or 1))
    scored = materialize_in_order(encoded.map_batches(
        Scorer, batch_format="pyarrow", batch_size=batch_size,
        fn_constructor_kwargs={"files": artifact_files(artifact.directory), "metrics_shift": shift},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
        **({"num_gpus": 1} if gpus else {"num_cpus": 1})))
    rows = scored.count()
    metrics = labelled_metrics(scored) if LABEL in scored.schema().names and rows else None
    if out:
        scored.select_columns([ROW_ID, "logit", "p"]).write_parquet(out)
    rejects = read_rejects(ledger)
    rejects.check_budget(error_budget, log_path)
    return ScoreResult(rows, metrics, unseen, rejects.to_dict() if hasattr(rejects, "to_dict") else {}, out, split)


def encoded_batches(model_dir: str | Path, log_path: str, fmt: str, *, split: str = "all", header: str = "auto",
                    error_budget: float = 0.001, limit: int = 100_000, batch_size: int = 16_384
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Up to ``limit`` rows of a log as the model's inputs (cat, dense, seq), encoded by the
    artifact's preprocessing: what ``recdistill export --check-log`` compares the exported
    model on."""
    from recdistill.data.datasource import new_ledger
    from recdistill.data.tensors import from_table

    artifact = load_artifact(model_dir)
    check_format(artifact, fmt)
    raw, schema, _ = _read(artifact, log_path, fmt, split, header, error_budget, new_ledger())
    check_fields(artifact, schema, log_path)
    encoded = raw.limit(limit).map_batches(artifact.preprocessor, batch_format="pyarrow")
    for t in encoded.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
        b = from_table(_with_label(t), artifact.preprocessor.schema, artifact.seq_len)
        yield b.cat, b.dense, b.seq


def describe(result: ScoreResult) -> list[str]:
    """The lines ``recdistill score`` prints."""
    lines = [f"[score] {result.rows:,} rows scored" + (f" → {result.out}" if result.out else "")]
    if result.metrics:
        m = result.metrics
        lines.append(f"[score] AUC {m['auc']:.6f}  LogLoss {m['logloss']:.6f}  calibration {m['calibration']:+.4f}")
    else:
        lines.append("[score] the log has no labels: no metrics")
    fields = result.unseen.get("fields", {})
    if any(fields.values()):
        lines.append("[score] unseen ids (rows): " + ", ".join(f"{k} {v:,}" for k, v in fields.items() if v))
    else:
        lines.append("[score] unseen ids: none")
    if result.unseen.get("hashed_no_oov"):
        lines.append(f"[score] hashed fields (never unseen, they collide instead): "
                     f"{', '.join(result.unseen['hashed_no_oov'])}")
    if result.rejects.get("rejected"):
        from recdistill.data.rejects import RejectTally

        lines += [f"[score] {line}" for line in RejectTally.from_dict(result.rejects).summary_lines()]
    else:
        lines.append(f"[score] rejected rows: none of {result.rejects.get('total', 0):,} read")
    return lines


__all__ = ["ArtifactError", "ScoreError", "score", "describe", "SPLITS"]
