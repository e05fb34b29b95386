"""``recdistill export MODEL_DIR --to FORMAT``: the serving half of an artifact.

Only the main tower is exported (a decoupled student's auxiliary tower is for training;
Rec-Distill serves the main one). The preprocessing spec, the vocabularies and the
sampling record go beside the exported model, with an ``export.json`` that says what its
inputs and output are, so a serving stack has all it needs in one directory. Every export
is checked against the eager model: on random valid inputs always, and on the rows of a
log (``--check-log``, e.g. the run's test split) when given.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from recdistill.artifacts.model_dir import MODEL, SAMPLING, Artifact, load_artifact
from recdistill.artifacts.preprocess_state import PREPROCESS, VOCAB

EXPORT_INFO = "export.json"
TOLERANCE = 1e-5


def random_batch(art: Artifact, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` rows of valid model inputs (codes inside each field's table, 0 = padding in
    sequences): for tracing, checking and timing, where values do not matter."""
    g = torch.Generator().manual_seed(seed)
    spec = art.model.features.spec
    cat = torch.stack([torch.randint(0, b, (n,), generator=g) for b in spec.buckets], 1) if spec.buckets \
        else torch.zeros((n, 0), dtype=torch.long)
    dense = torch.randn((n, spec.dense_width), generator=g)
    length = max(1, art.seq_len)
    seq = torch.stack([torch.randint(0, spec.buckets[f], (n, length), generator=g) for f in spec.sequence_fields], 1) \
        if spec.sequence_fields else torch.zeros((n, 0, 1), dtype=torch.long)
    return cat, dense, seq


def export_artifact(model_dir: str | Path, fmt: str, out: str | Path | None = None,
                    check_batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = (),
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export the artifact's main tower to ``out`` (default ``MODEL_DIR/export/<fmt>/``) and
    check it; returns what ``export.json`` records (the check's largest difference included).
    Raises when the exported model's logits differ from the eager ones by more than 1e-5."""
    from recdistill.serving.export import export, load, max_abs_diff

    art = load_artifact(model_dir)
    out = Path(out) if out else art.directory / "export" / fmt
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    path = export(art.model, random_batch(art, 8), fmt, out)
    for name in (PREPROCESS, VOCAB, SAMPLING, MODEL):
        if (art.directory / name).exists():
            shutil.copyfile(art.directory / name, out / name)
    loaded = load(path, fmt)
    checks = {"random rows (batch 1, 7, 512)": max_abs_diff(art.model, loaded,
                                                             [random_batch(art, n, seed=n) for n in (1, 7, 512)])}
    batches = list(check_batches)
    if batches:
        checks[f"log rows ({sum(int(b[0].shape[0]) for b in batches):,})"] = max_abs_diff(art.model, loaded, batches)
    worst = max(checks.values())
    spec = art.model.features.spec
    info = {"format": fmt, "file": path.name, "model": art.manifest["name"], "role": art.manifest["role"],
            "source_weights_sha256": art.manifest["files"]["weights.safetensors"]["sha256"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "inputs": {"cat": f"int64 (batch, {len(spec.buckets)}): codes per categorical field, in "
                              f"{PREPROCESS}'s schema order",
                       "dense": f"float32 (batch, {spec.dense_width}): dense fields after the dense transform"
                                + (f", then the teacher representations ({list(spec.extra_dense)}: see model.json's "
                                   f"representations)" if spec.extra_dense else ""),
                       "seq": f"int64 (batch, {len(spec.sequence_fields)}, length): sequence codes, 0 = padding"},
            "output": f"main-tower logit (batch,); population p = sigmoid(logit + population_logit_shift from "
                      f"{SAMPLING})",
            "dropped": "auxiliary tower (training only)" if art.model.decoupled else None,
            "max_abs_diff_vs_eager": checks, "tolerance": TOLERANCE}
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2))
    if worst > TOLERANCE:
        raise ValueError(f"{path}: the exported model's logits differ from the eager model's by {worst:.3g} "
                         f"(> {TOLERANCE:g}): {checks}")
    log(f"[export] {art.manifest['name']} → {path} ({fmt}); largest difference from the eager model "
        + ", ".join(f"{k}: {v:.2e}" for k, v in checks.items()))
    return info
