"""Model artifacts without Ray: written, read back, checked; the encoder they carry encodes
a raw batch as the run's did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from recdistill.artifacts.model_dir import (MANIFEST, WEIGHTS, ArtifactError, describe_model, load_artifact,
                                           sampling_record, write_artifact)
from recdistill.artifacts.preprocess_state import VOCAB
from recdistill.config import StudentConfig
from recdistill.data.preprocess import FieldEncoding, Preprocessor
from recdistill.data.schema import LogSchema
from recdistill.data.tensors import from_table
from recdistill.models import FeatureSpec, Ranker

SCHEMA = LogSchema(dense=("d0", "d1"), categorical=("u", "item", "site"), sequences=(("hist", "item"),),
                   user_field="u", source="avazu")


def _pre() -> Preprocessor:
    return Preprocessor(SCHEMA, {"u": FieldEncoding("hash", 50),
                                 "item": FieldEncoding("vocab", 5, pd.Index(["b", "a", "7"], dtype=object)),
                                 "site": FieldEncoding("vocab", 4, pd.Index(["x", "y"], dtype=object))})


def _batch(n: int = 64, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    items = rng.choice(["a", "b", "7", "new", None], n).tolist()
    return pa.table({"row_id": pa.array(np.arange(n), pa.int64()), "label": pa.array(rng.integers(0, 2, n), pa.int8()),
                     "d0": pa.array(rng.normal(size=n).astype(np.float32)),
                     "d1": pa.array(np.where(rng.random(n) < 0.2, np.nan, rng.lognormal(size=n)).astype(np.float32)),
                     "u": pa.array([f"user{i % 9}" for i in range(n)]), "item": pa.array(items, pa.string()),
                     "site": pa.array(rng.choice(["x", "y", "z"], n).tolist()),
                     "hist": pa.array([rng.choice(["a", "b", "q"], int(k)).tolist() for k in rng.integers(0, 4, n)],
                                      pa.list_(pa.string()))})


def _artifact(tmp_path: Path, towers: str = "decoupled") -> tuple[Path, Ranker, Preprocessor]:
    pre = _pre()
    spec = FeatureSpec(tuple(pre.buckets[c] for c in SCHEMA.categorical), 2, (1,))
    s = StudentConfig(arch="deepfm", embed_dim=4, depth=1, width=8, towers=towers)
    torch.manual_seed(0)
    model = Ranker(spec, s.arch, s.embed_dim, s.depth, s.width, towers=towers)
    out = write_artifact(tmp_path / "models" / "small" / "distill", "small/distill", "student-distill", model,
                         describe_model(s, towers, spec, 3), pre, sampling_record(0.25, 1.0),
                         {"run": "t", "metrics": {"auc": 0.7}})
    return out, model, pre


def test_an_artifact_scores_a_raw_batch_as_the_model_it_was_written_from(tmp_path: Path) -> None:
    out, model, pre = _artifact(tmp_path)
    art = load_artifact(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST, WEIGHTS, "model.json", "preprocess.json", VOCAB, "sampling.json", "provenance.json"])
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["name"] == "small/distill" and set(manifest["files"]) == {
        p.name for p in out.iterdir()} - {MANIFEST}
    raw = _batch()
    a = from_table(pre(raw), SCHEMA, 3)
    b = from_table(art.preprocessor(raw), art.preprocessor.schema, art.seq_len)
    assert torch.equal(a.cat, b.cat) and torch.equal(a.seq, b.seq) and torch.equal(a.dense, b.dense)
    model.eval()
    with torch.no_grad():
        want, got = model(a.cat, a.dense, a.seq)[0], art.model(b.cat, b.dense, b.seq)[0]
    assert torch.equal(want, got)
    assert art.model.decoupled and art.sampling["population_logit_shift"] == pytest.approx(np.log(0.25))
    # the vocabulary comes back in code order: "b" was code 2, unseen ids OOV (1), missing 0
    item = art.preprocessor.fields["item"]
    assert item.encode(pa.array(["b", "a", "7", "new", None])).tolist() == [2, 3, 4, 1, 0]


def test_a_changed_or_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    out, _, _ = _artifact(tmp_path)
    weights = out / WEIGHTS
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match=r"weights\.safetensors.*sha256"):
        load_artifact(out)
    out2, _, _ = _artifact(tmp_path / "b")
    (out2 / VOCAB).unlink()
    with pytest.raises(ArtifactError, match=r"vocab\.parquet: listed in manifest\.json but missing"):
        load_artifact(out2)
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_artifact(tmp_path)


def test_weights_that_do_not_fit_the_model_config_are_refused(tmp_path: Path) -> None:
    out, _, _ = _artifact(tmp_path)
    cfg = json.loads((out / "model.json").read_text())
    cfg["width"] = 9  # hand-edited config: the manifest's hash catches it first
    (out / "model.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="model.json.*sha256"):
        load_artifact(out)


def test_the_artifact_holds_no_pickle(tmp_path: Path) -> None:
    out, _, _ = _artifact(tmp_path)
    from safetensors import safe_open

    with safe_open(str(out / WEIGHTS), framework="pt") as f:
        assert "aux.weight" in set(f.keys())  # the whole trained model; export drops the aux tower
    for p in out.iterdir():
        assert not p.read_bytes().startswith(b"\x80"), p  # no pickle protocol header anywhere


def test_the_score_summary_names_unseen_ids_and_rejected_rows() -> None:
    from recdistill.artifacts.score import ScoreResult, describe
    from recdistill.data.rejects import RejectTally

    tally = RejectTally(total=1000)
    tally.add("too_few_fields", "log.txt", 7, "1\t2")
    got = describe(ScoreResult(999, {"auc": 0.75, "logloss": 0.45, "calibration": 0.01, "rows": 999},
                               {"rows": 999, "fields": {"site": 12, "item": 0}, "hashed_no_oov": ["u"]},
                               tally.to_dict(), None, "all"))
    text = "\n".join(got)
    assert "AUC 0.750000" in text and "unseen ids (rows): site 12" in text and "item" not in text.split("unseen")[1]
    assert "hashed fields" in text and "too_few_fields" in text
    clean = describe(ScoreResult(5, None, {"rows": 5, "fields": {}}, RejectTally(total=5).to_dict(), "p/", "test"))
    assert "no labels" in "\n".join(clean) and "rejected rows: none of 5 read" in "\n".join(clean)


def test_a_scoring_actor_takes_a_gpu_only_when_ray_gave_it_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zero-GPU actor on a GPU node still sees the node's GPUs (Ray leaves its
    CUDA_VISIBLE_DEVICES): it scores on the CPU, not on a GPU a Train worker holds."""
    import ray

    from recdistill.artifacts.score import actor_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert actor_device() == torch.device("cpu")
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    assert actor_device() == torch.device("cuda")
