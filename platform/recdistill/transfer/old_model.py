"""A saved model artifact as the OLD model of the transfer stage (CrossAdapt's real use:
the model in production is a file, not a teacher this run trains).

- Its logits: the raw train rows are scored by the artifact with its OWN encoding, before
  the run's encoder turns them into the new model's codes; the logit rides along as the
  row's signal (``signals.kinds.LOGIT``), so the students' window needs no signal store.
  The logit is moved onto this run's teacher convention: the artifact's population shift
  (its own and its data's negative keep rates) out, this run's teacher and data keep
  rates in, so the sampling-aware debias treats it as it treats a teacher trained here.
- Its embeddings: projected into the new model's table through the id pairing of the two
  encoders (``artifacts.id_pairs``: one pass over the train split, distinct pairs only),
  the other vocabulary or hash size included. Ids the old model never saw are counted per
  field; their rows keep the new model's own initialisation.
- Its AUC on this run's test rows, scored with its own encoding, for the report.

Augmentation (made-up pairs the teacher scores) would need the old encoding of rows the
run has already encoded; it is refused with the old model (``transfer.augment.ratio=0``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from recdistill.artifacts.model_dir import Artifact, ArtifactError, load_artifact
from recdistill.config import ConfigError, ExperimentConfig
from recdistill.signals.kinds import LOGIT


@dataclass
class OldModel:
    artifact: Artifact
    files: Any  # ObjectRef of the artifact's files (``score.artifact_files``): what actors rebuild it from
    offset: float  # added to its logits: its population shift out, this run's teacher convention in

    def describe(self) -> dict[str, Any]:
        a = self.artifact
        weights = a.manifest["files"].get("weights.safetensors", {})
        return {"path": str(a.directory), "name": a.manifest.get("name"), "arch": a.config["arch"],
                "embed_dim": a.config["embed_dim"], "buckets": list(a.config["spec"]["buckets"]),
                "weights_sha256": weights.get("sha256"), "logit_offset": self.offset,
                "trained_in": a.provenance.get("run"), "test_metrics_at_training": a.provenance.get("metrics")}


def open_old_model(cfg: ExperimentConfig, log: Callable[[str], None]) -> OldModel:
    """``transfer.old_model`` read back and checked; its files put in the object store once."""
    import ray

    from recdistill.artifacts.score import artifact_files

    path = Path(cfg.transfer.old_model or "")
    try:
        art = load_artifact(path)
    except (ArtifactError, FileNotFoundError) as e:
        raise ConfigError(f"transfer.old_model={str(path)!r}: not a model artifact ({e})") from e
    shift = float(art.sampling["population_logit_shift"])
    offset = math.log(cfg.teacher.negative_keep_rate) + math.log(cfg.data.negative_keep_rate) - shift
    log(f"[transfer] old model: {art.config['arch']} (embed {art.config['embed_dim']}) from {path}; "
        f"its logits shifted by {offset:+.4f} onto this run's sampling")
    return OldModel(art, ray.put(artifact_files(path)), offset)


def check_fields(old: OldModel, schema: Any) -> None:
    """The old model must take the run's categorical fields, in the run's order (its table's
    field slices are matched to the new model's by position)."""
    have = list(old.artifact.preprocessor.schema.categorical)
    want = list(schema.categorical)
    if have != want:
        missing = [f for f in want if f not in have]
        raise ConfigError(f"transfer.old_model: its categorical fields {have} are not this log's {want}"
                          + (f" (missing: {', '.join(missing)})" if missing else " (another order)"))
    if list(old.artifact.preprocessor.schema.dense) != list(schema.dense):
        raise ConfigError(f"transfer.old_model: its dense fields {list(old.artifact.preprocessor.schema.dense)} are "
                          f"not this log's {list(schema.dense)}")


class OldLogits:
    """Ray Data actor: raw rows in, the same rows out with the old model's logit appended
    (its own encoding, on the actor's device)."""

    def __init__(self, files: Any, offset: float) -> None:
        from recdistill.artifacts.score import Scorer

        self.scorer = Scorer(files, 0.0)
        self.pre = self.scorer.art.preprocessor
        self.offset = np.float32(offset)

    def __call__(self, batch: pa.Table) -> pa.Table:
        z = self.scorer(self.pre(batch)).column("logit").to_numpy(zero_copy_only=False).astype(np.float32)
        return batch.append_column(LOGIT, pa.array(z + self.offset, pa.float32()))


def with_old_logits(old: OldModel) -> Callable[[Any], Any]:
    """The raw-train hook of ``engine.prepare.prepare_log``: every train row scored by the old model."""
    def hook(raw_train: Any) -> Any:
        return raw_train.map_batches(OldLogits, batch_format="pyarrow", concurrency=1,
                                     fn_constructor_kwargs={"files": old.files, "offset": old.offset})
    return hook


def old_test_auc(old: OldModel, raw_test: Any) -> float:
    """The old model's AUC on this run's test rows, with its own encoding."""
    from recdistill.artifacts.score import Scorer, labelled_metrics

    scored = (raw_test.map_batches(old.artifact.preprocessor, batch_format="pyarrow")
              .map_batches(Scorer, batch_format="pyarrow", concurrency=1,
                           fn_constructor_kwargs={"files": old.files, "metrics_shift": 0.0}))
    metrics = labelled_metrics(scored)
    return float(metrics["auc"]) if metrics else float("nan")


def old_projection(cfg: ExperimentConfig, old: OldModel, raw_train: Any, new_pre: Any, spec: Any
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """students[0]'s embedding table with the old model's rows projected into it through the
    encoders' id pairing, as ``transfer.workers`` takes it (table, per-field report, seconds),
    and the pairing's report (distinct pairs and the rows whose id the old model never saw)."""
    from recdistill.artifacts.id_pairs import encoder_pairs
    from recdistill.train.plan import build_model, student_init_seed
    from recdistill.transfer.projection import project_table

    t0 = time.perf_counter()
    pairs, report = encoder_pairs(raw_train, old.artifact.preprocessor, new_pre)
    s = cfg.students[0]
    student = build_model(spec, s, s.towers, student_init_seed(cfg, 0), sparse_embeddings=False)
    fields = project_table(old.artifact.model.features, student.features, pairs, cfg.run.seed)
    projected = {"table": student.features.table.weight.detach().clone(), "fields": [f.to_dict() for f in fields],
                 "seconds": time.perf_counter() - t0}
    return projected, report

