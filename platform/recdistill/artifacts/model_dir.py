"""One model's artifact directory, ``runs/<run>/models/<model>/``::

    manifest.json       what each file is, its bytes and sha256; the model's name and role
    weights.safetensors the state dict (safetensors: tensors only, nothing to unpickle)
    model.json          architecture, towers and feature spec: what rebuilds the module
    preprocess.json     the log schema, each field's encoding and buckets, the dense transform
    vocab.parquet       the fitted vocabularies (encoding=vocab only)
    sampling.json       the negative down-sampling the model trained under, and the logit
                        shift that takes its scores back to population space
    provenance.json     run, teacher key, data fingerprint, config hash, git commit, metrics

Everything a scorer needs is inside: nothing points back into the run or the signal store,
so the directory can be copied anywhere. It is written to a temporary sibling and renamed
into place, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from recdistill.config import to_dict
from recdistill.artifacts.preprocess_state import PREPROCESS, VOCAB, read_preprocessor, write_preprocessor
from recdistill.data.preprocess import Preprocessor
from recdistill.models import FeatureSpec, Ranker
from recdistill.train.checkpoint import save_weights

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
MODEL = "model.json"
SAMPLING = "sampling.json"
PROVENANCE = "provenance.json"
_ROLES = {WEIGHTS: "weights (safetensors state dict)", MODEL: "model config and feature spec",
          PREPROCESS: "log schema, field encodings, dense transform", VOCAB: "fitted vocabularies",
          SAMPLING: "training down-sampling and the population-space logit shift",
          PROVENANCE: "run, teacher key, data fingerprint, config hash, git commit, metrics"}


class ArtifactError(ValueError):
    """A model directory that is not a readable artifact: names the file and what is wrong."""


def describe_model(m: Any, towers: str, spec: FeatureSpec, seq_len: int) -> dict[str, Any]:
    """``model.json``'s content for a teacher or student config ``m`` built with ``towers``."""
    return {"arch": m.arch, "embed_dim": m.embed_dim, "depth": m.depth, "width": m.width, "towers": towers,
            "tower_width": getattr(m, "tower_width", 0), "seq_len": seq_len,
            "spec": {"buckets": list(spec.buckets), "num_dense": spec.num_dense,
                     "sequence_fields": list(spec.sequence_fields),
                     **({"extra_dense": list(spec.extra_dense)} if spec.extra_dense else {}),
                     **({"code_prefix": list(spec.code_prefix)} if spec.code_prefix else {})},
            **({"representations": to_dict(m.representations)} if _reads(m) else {})}


def _reads(m: Any) -> bool:
    """Whether a student config reads the teacher's representations or semantic IDs."""
    r = getattr(m, "representations", None)
    return bool(getattr(r, "use", None) or getattr(r, "codes", None))


def sampling_record(model_negative_keep: float, data_negative_keep: float) -> dict[str, Any]:
    """Scores of a model trained on negatives kept at rate r are odds-scaled by 1/r; adding
    log r to the logit undoes it. The model's own rate and the experiment's (data) rate
    compound."""
    return {"model_negative_keep": model_negative_keep, "data_negative_keep": data_negative_keep,
            "population_logit_shift": math.log(model_negative_keep) + math.log(data_negative_keep)}


def git_commit() -> str | None:
    """The commit of the code that trained the model (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_artifact(out: Path, name: str, role: str, weights: Path | torch.nn.Module, model: dict[str, Any],
                   preprocessor: Preprocessor, sampling: dict[str, Any], provenance: dict[str, Any]) -> Path:
    """Write the artifact of one model to ``out`` (replacing one there). ``weights``: the
    model itself, or a safetensors file a worker wrote."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if isinstance(weights, torch.nn.Module):
            save_weights(weights, tmp / WEIGHTS)
        else:
            shutil.copyfile(weights, tmp / WEIGHTS)
        (tmp / MODEL).write_text(json.dumps(model, indent=2, sort_keys=True))
        files = [WEIGHTS, MODEL, *write_preprocessor(preprocessor, tmp)]
        (tmp / SAMPLING).write_text(json.dumps(sampling, indent=2, sort_keys=True))
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True, default=str))
        files += [SAMPLING, PROVENANCE]
        manifest = {"format": "recdistill-model", "format_version": FORMAT_VERSION, "name": name, "role": role,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "files": {f: {"role": _ROLES[f], "bytes": (tmp / f).stat().st_size, "sha256": _sha256(tmp / f)}
                              for f in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{directory}: not a model artifact (no {MANIFEST}); a run writes them under "
                            f"runs/<run>/models/<model>/")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != "recdistill-model":
        raise ArtifactError(f"{path}: format {manifest.get('format')!r}, expected 'recdistill-model'")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {manifest['format_version']} is newer than this recdistill "
                            f"reads ({FORMAT_VERSION}); upgrade recdistill")
    return manifest


def verify(directory: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is there, whole and unchanged."""
    for name, entry in manifest["files"].items():
        path = Path(directory) / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in {MANIFEST} but missing")
        if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            raise ArtifactError(f"{path}: its bytes differ from {MANIFEST}'s sha256 (changed or truncated)")


@dataclass
class Artifact:
    directory: Path
    manifest: dict[str, Any]
    model: Ranker  # in eval mode, on CPU
    preprocessor: Preprocessor
    config: dict[str, Any]  # model.json
    sampling: dict[str, Any]
    provenance: dict[str, Any]

    @property
    def seq_len(self) -> int:
        return int(self.config.get("seq_len", 0))


@contextlib.contextmanager
def unpacked(files: dict[str, bytes]) -> Iterator[Path]:
    """An artifact sent as its files' bytes (to a scoring actor or a timing task, on nodes
    that cannot read the driver's disk), written to a temporary directory for the block."""
    with tempfile.TemporaryDirectory() as d:
        for name, blob in files.items():
            Path(d, name).write_bytes(blob)
        yield Path(d)


def build_ranker(config: dict[str, Any]) -> Ranker:
    spec = config["spec"]
    fs = FeatureSpec(tuple(spec["buckets"]), int(spec["num_dense"]), tuple(spec["sequence_fields"]),
                     tuple(spec.get("extra_dense", ())), tuple(spec.get("code_prefix", ())))
    return Ranker(fs, config["arch"], config["embed_dim"], config["depth"], config["width"], towers=config["towers"],
                  tower_width=config.get("tower_width", 0), sparse_embeddings=False)


def load_artifact(directory: str | os.PathLike[str]) -> Artifact:
    """An artifact read back and checked: files against the manifest, the weights against
    the architecture (every tensor present, none extra, shapes equal)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    manifest = read_manifest(directory)
    verify(directory, manifest)
    config = json.loads((directory / MODEL).read_text())
    model = build_ranker(config)
    state = load_file(str(directory / WEIGHTS))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{directory / WEIGHTS}: does not fit {directory / MODEL}: {e}") from e
    model.eval()
    return Artifact(directory, manifest, model, read_preprocessor(directory), config,
                    json.loads((directory / SAMPLING).read_text()), json.loads((directory / PROVENANCE).read_text()))
