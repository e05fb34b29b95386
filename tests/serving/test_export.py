import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recdistill.models import FeatureSpec, Ranker
from recdistill.serving.export import (FORMATS, MainTower, available_formats, export, load,
                                       max_abs_diff)
from recdistill.serving.latency import file_bytes, measure, param_counts

FULL = FeatureSpec(buckets=(10, 20, 7), num_dense=3, sequence_fields=(1,))
BARE = FeatureSpec(buckets=(10, 20, 7), num_dense=0)  # dense (B, 0), seq (B, 0, 1)
SEQ_LEN = 4
TOL = 1e-5
# each backbone once per format, both tower kinds and both specs among them
CASES = [("dnn", "decoupled", FULL), ("deepfm", "single", BARE),
         ("dcnv2", "decoupled", BARE), ("tokenmixer", "single", FULL)]
TORCH_FORMATS = [f for f in FORMATS if f != "onnx"]


def _batch(spec: FeatureSpec, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, n, (rows,), generator=g) for n in spec.buckets], 1)
    dense = torch.randn(rows, spec.num_dense, generator=g)
    if spec.sequence_fields:  # codes in the shared field's range; 0 is padding
        seq = torch.stack([torch.randint(0, spec.buckets[f], (rows, SEQ_LEN), generator=g)
                           for f in spec.sequence_fields], 1)
        seq[0] = 0  # an empty history
    else:
        seq = torch.zeros(rows, 0, 1, dtype=torch.long)
    return cat, dense, seq


def _ranker(arch: str, towers: str, spec: FeatureSpec, tower_width: int = 0) -> Ranker:
    torch.manual_seed(0)
    return Ranker(spec, arch, embed_dim=4, depth=2, width=8, towers=towers, tower_width=tower_width)


def _round_trip(model: Ranker, spec: FeatureSpec, fmt: str, out: Path, example_rows: int) -> None:
    model.train()  # export must not leave it in eval mode
    path = export(model, _batch(spec, example_rows, seed=1), fmt, out)
    assert path.parent == out and path.is_file()
    assert model.training and all(m.training for m in model.modules())
    loaded = load(path, fmt)
    batches = [_batch(spec, rows, seed=rows) for rows in (1, 7, 512)]
    assert [loaded(*b).shape for b in batches] == [(1,), (7,), (512,)]
    assert max_abs_diff(model, loaded, batches) <= TOL


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
@pytest.mark.parametrize("arch, towers, spec", CASES, ids=[c[0] for c in CASES])
def test_torch_formats_round_trip_at_any_batch(fmt: str, arch: str, towers: str, spec: FeatureSpec,
                                               tmp_path: Path) -> None:
    # an example batch of 1 must not pin the exported batch size to 1
    _round_trip(_ranker(arch, towers, spec), spec, fmt, tmp_path, example_rows=1 if arch == "dnn" else 5)


@pytest.mark.parametrize("arch, spec", [("dnn", FULL), ("tokenmixer", BARE)], ids=["dnn-full", "tokenmixer-bare"])
def test_onnx_round_trips_and_drops_the_aux_tower(arch: str, spec: FeatureSpec, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="ONNX extra not installed: pip install 'recdistill[onnx]'")
    from onnx import numpy_helper
    pytest.importorskip("onnxscript", reason="ONNX extra not installed: pip install 'recdistill[onnx]'")
    pytest.importorskip("onnxruntime", reason="ONNX extra not installed: pip install 'recdistill[onnx]'")
    assert "onnx" in available_formats()
    model = _ranker(arch, "decoupled", spec, tower_width=8)
    _round_trip(model, spec, "onnx", tmp_path, example_rows=1)
    one_thread = load(tmp_path / "model.onnx", "onnx", threads=1)
    assert max_abs_diff(model, one_thread, [_batch(spec, 9)]) <= TOL
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["cat", "dense", "seq"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert not any("aux" in t.name for t in graph.initializer)
    # by value too: the optimizer renames, transposes and deduplicates initializers
    stored = np.concatenate([numpy_helper.to_array(t).ravel() for t in graph.initializer])
    assert np.isin(model.main[0].weight.detach().numpy(), stored).all()
    assert not np.isin(model.aux[0].weight.detach().numpy(), stored).any()


def test_onnx_without_its_packages_names_them_and_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes it unimportable
    assert "onnx" not in available_formats()
    assert available_formats() == TORCH_FORMATS
    with pytest.raises(ImportError, match=r"onnxscript.*pip install 'recdistill\[onnx\]'"):
        export(_ranker("dnn", "single", FULL), _batch(FULL, 2), "onnx", tmp_path)
    assert not list(tmp_path.iterdir())


def test_bad_format_and_inputs_fail_clearly(tmp_path: Path) -> None:
    model = _ranker("dnn", "single", FULL)
    with pytest.raises(ValueError, match="unknown format 'savedmodel'"):
        export(model, _batch(FULL, 2), "savedmodel", tmp_path)
    cat, dense, seq = _batch(FULL, 2)
    with pytest.raises(ValueError, match="float32 dense"):
        export(model, (cat, dense.double(), seq), "exported-program", tmp_path)
    with pytest.raises(ValueError, match="batch sizes differ"):
        export(model, (cat, dense[:1], seq), "exported-program", tmp_path)
    with pytest.raises(ValueError, match=r"\(B, 0, 1\)"):
        export(model, (cat, dense, seq[:, 0]), "exported-program", tmp_path)


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_exported_files_hold_the_main_tower_only(fmt: str, tmp_path: Path) -> None:
    model = _ranker("dcnv2", "decoupled", FULL, tower_width=8)
    assert any(k.startswith("aux.") for k in model.state_dict())
    assert not any("aux" in k for k in MainTower(model).state_dict())
    path = export(model, _batch(FULL, 3), fmt, tmp_path)
    if fmt == "exported-program":
        state = torch.export.load(path).state_dict
    else:
        state = _jit_state(path)
    assert state and not any("aux" in k for k in state)
    assert sum(t.numel() for t in state.values()) == param_counts(model)["total"]


def _jit_state(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        # parameters: a ScriptModule's state_dict also holds non-persistent buffers (offsets)
        return dict(torch.jit.load(str(path)).named_parameters())


@pytest.fixture(scope="module")
def exported_program(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ranker, object]:
    model = _ranker("tokenmixer", "decoupled", FULL)
    path = export(model, _batch(FULL, 4), "exported-program", tmp_path_factory.mktemp("ep"))
    return model, load(path, "exported-program")


@settings(max_examples=12, deadline=None)
@given(rows=st.integers(1, 700), seed=st.integers(0, 2**16))
def test_exported_program_matches_eager_for_any_batch(exported_program: tuple[Ranker, object],
                                                       rows: int, seed: int) -> None:
    model, loaded = exported_program
    assert max_abs_diff(model, loaded, [_batch(FULL, rows, seed)]) <= TOL


def test_measure_reports_ordered_positive_latencies_and_restores_threads() -> None:
    model = _ranker("dnn", "decoupled", FULL).eval()
    tower = MainTower(model)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        report = measure(tower, lambda b: _batch(FULL, b), batch_sizes=(1, 64), warmup=2, iters=30,
                         threads=1, max_seconds=1.0)
        assert torch.get_num_threads() == 2
        assert report["threads"] == 1 and report["device"] == "cpu"
        assert set(report["batch"]) == {"1", "64"}
        for b, row in report["batch"].items():
            assert set(row) >= {"p50_ms", "p99_ms", "rows_per_s", "iters"}
            assert 0 < row["p50_ms"] <= row["p99_ms"] and row["rows_per_s"] > 0
            assert 20 <= row["iters"] <= 30

        def broken(*_: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            measure(broken, lambda b: _batch(FULL, b), threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_measure_stops_at_the_time_budget_after_the_minimum() -> None:
    report = measure(lambda *x: x[0].sum(), lambda b: _batch(BARE, b), batch_sizes=(8,), warmup=0,
                     iters=10**7, max_seconds=0.02)
    assert 20 <= report["batch"]["8"]["iters"] < 10**7
    with pytest.raises(ValueError, match="batch_sizes"):
        measure(lambda *x: x[0], lambda b: _batch(BARE, b), batch_sizes=(0,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_measure_on_cuda() -> None:
    tower = MainTower(_ranker("dnn", "single", FULL).eval().cuda())
    report = measure(tower, lambda b: _batch(FULL, b), batch_sizes=(1, 512), warmup=2, iters=20, device="cuda")
    assert report["device"].startswith("cuda")
    assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in report["batch"].values())


def test_param_counts_exclude_the_aux_tower() -> None:
    model = _ranker("dnn", "decoupled", FULL, tower_width=8)
    dim, width = 4, 8
    tokens = len(FULL.buckets) + len(FULL.sequence_fields) + 1
    embedding = sum(FULL.buckets) * dim
    dense = (FULL.num_dense * dim + dim  # dense projection
             + tokens * dim * width + width + width * width + width  # backbone: depth-2 MLP
             + width * 8 + 8 + 8 + 1)  # main tower: hidden 8, then the logit
    assert param_counts(model) == {"dense": dense, "embedding": embedding, "total": dense + embedding}
    assert model.num_params() == dense + embedding + sum(p.numel() for p in model.aux.parameters())


def test_file_bytes_counts_a_file_or_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 5)
    assert file_bytes(tmp_path / "a") == 10
    assert file_bytes(tmp_path) == 15
    with pytest.raises(FileNotFoundError):
        file_bytes(tmp_path / "missing")


@pytest.mark.parametrize("fmt", available_formats())
def test_a_student_reading_prefix_tokens_exports_with_its_transform(fmt: str, tmp_path: Path) -> None:
    """Semantic IDs as prefix tokens (``FeatureSpec.code_prefix``): the served model takes the
    per-level codes and computes the tokens itself, exact and hashed levels alike."""
    from recdistill.models.features import prefix_buckets

    spec = FeatureSpec(buckets=(10,) + prefix_buckets(3, 64) * 2, num_dense=3, code_prefix=(2, 3, 64))
    model = _ranker("dcnv2", "single", spec)

    def batch(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        cat = torch.cat([torch.randint(0, 10, (rows, 1), generator=g), torch.randint(0, 65, (rows, 6), generator=g)], 1)
        return cat, torch.randn(rows, 3, generator=g), torch.zeros(rows, 0, 1, dtype=torch.long)

    loaded = load(export(model, batch(3, 1), fmt, tmp_path), fmt)
    assert max_abs_diff(model, loaded, [batch(n, n) for n in (1, 7, 512)]) <= TOL
