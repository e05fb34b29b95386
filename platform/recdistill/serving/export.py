"""Export a ranker's main tower for serving, load it back, and check it against eager.

Rec-Distill serves the main tower only: the decoupled student's auxiliary tower exists to
take the distillation loss during training. ``MainTower`` is built from the ranker's
``features``, ``backbone`` and ``main`` submodules, so no exported file carries aux weights.

Every format takes ``(cat (B, F) int64, dense (B, D) float32, seq (B, S, L) int64)`` and
returns the logit (B,). Only the batch dimension is dynamic: F, D, S and L are fixed at
export time (D = 0 and S = 0 included), as they are for a trained model's inputs.

Loading a ``.pt`` or ``.pt2`` file runs what it contains: load only files you exported.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from recdistill.models import Ranker

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Scorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

FORMATS = ("torchscript", "exported-program", "onnx")
FILE_NAMES = {"torchscript": "model.torchscript.pt", "exported-program": "model.pt2", "onnx": "model.onnx"}
INPUT_NAMES = ("cat", "dense", "seq")
# onnx: the format; onnxscript: torch.onnx's default (dynamo) exporter; onnxruntime: load()
ONNX_DEPS = ("onnx", "onnxscript", "onnxruntime")
ONNX_INSTALL = "pip install 'recdistill[onnx]'"
# protobuf caps a single .onnx file at 2 GiB; past half that, weights go to model.onnx.data
ONNX_INLINE_BYTES = 1 << 30
# torch.export specialises a dimension it sees as 0 or 1, so the traced batch has >= 2 rows
TRACE_ROWS = 2


class MainTower(nn.Module):
    """The serving path of a ``Ranker``: features → backbone → main head, logit (B,).

    Shares the ranker's modules (no copy), and holds no reference to the aux tower.
    """

    def __init__(self, model: Ranker) -> None:
        super().__init__()
        self.features = model.features
        self.backbone = model.backbone
        self.main = model.main

    def forward(self, cat: torch.Tensor, dense: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        return self.main(self.backbone(self.features(cat, dense, seq))).squeeze(-1)


def available_formats() -> list[str]:
    """Formats whose dependencies are installed (found on the path, not imported: the ONNX
    stack takes seconds to import)."""
    return [f for f in FORMATS if f != "onnx" or not _missing(ONNX_DEPS)]


def export(model: Ranker, example: Inputs, fmt: str, out_dir: Path) -> Path:
    """Write ``model``'s main tower in ``fmt`` to ``out_dir``; returns the file's path.

    ``example`` is one batch of real inputs (any batch size >= 1); the exported model
    accepts any batch size. The model is exported in eval mode on CPU and left as it was.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx("export to ONNX")
    example = _trace_example(_check_inputs(example))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAMES[fmt]
    tower = _cpu_tower(model)
    with _eval(tower), torch.no_grad():
        if fmt == "torchscript":
            _export_torchscript(tower, example, path)
        elif fmt == "exported-program":
            torch.export.save(_export_program(tower, example), path)
        else:
            _export_onnx(tower, example, path)
    return path


def load(path: Path, fmt: str, threads: int | None = None) -> Scorer:
    """An exported model as ``f(cat, dense, seq) -> logit (B,)`` on CPU tensors.

    ``threads`` sets ONNX Runtime's intra-op threads (torch formats follow
    ``torch.set_num_threads``); None keeps its default of one per core.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path}")
    if fmt == "onnx":
        return _load_onnx(path, threads)
    if fmt == "torchscript":
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location="cpu")
    else:
        module = torch.export.load(path).module()

    def score(cat: torch.Tensor, dense: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(cat, dense, seq)

    return score


def max_abs_diff(model: Ranker, loaded: Scorer, batches: Iterable[Inputs]) -> float:
    """Largest |eager main-tower logit − exported logit| over ``batches``."""
    tower = MainTower(model)
    device = next(tower.parameters()).device
    worst, seen = 0.0, 0
    with _eval(tower), torch.no_grad():
        for batch in batches:
            cat, dense, seq = _check_inputs(batch)
            want = tower(cat.to(device), dense.to(device), seq.to(device)).float().cpu()
            got = torch.as_tensor(loaded(cat.cpu(), dense.cpu(), seq.cpu())).float().cpu()
            if got.shape != want.shape:
                raise ValueError(f"exported model returned shape {tuple(got.shape)}; eager {tuple(want.shape)}")
            if want.numel():
                worst = max(worst, (got - want).abs().max().item())
            seen += 1
    if not seen:
        raise ValueError("max_abs_diff needs at least one batch")
    return worst


def _export_program(tower: MainTower, example: Inputs) -> torch.export.ExportedProgram:
    # One Dim shared by all three inputs: they are rows of the same batch. min=1 keeps
    # batch-1 requests valid although tracing sees TRACE_ROWS rows.
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(tower, example, dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))


def _export_torchscript(tower: MainTower, example: Inputs, path: Path) -> None:
    # trace, not script: FeatureEmbedding branches on a frozen dataclass (the spec), which
    # script cannot compile; tracing bakes those branches in, and the batch size stays
    # symbolic because no Python code reads it.
    with _quiet_jit():
        traced = torch.jit.trace(tower, example)
        torch.jit.save(traced, str(path))


def _export_onnx(tower: MainTower, example: Inputs, path: Path) -> None:
    # The dynamo exporter (torch.onnx's default since 2.9; it needs onnxscript): it captures
    # with torch.export, so the dynamic batch is declared exactly as for model.pt2 and the
    # inputs are named "batch" in the graph. The legacy dynamo=False path goes through the
    # deprecated TorchScript tracer and warns that it will be removed.
    batch = torch.export.Dim("batch", min=1)
    weights = sum(t.numel() * t.element_size() for t in [*tower.parameters(), *tower.buffers()])
    stale = path.with_name(path.name + ".data")
    stale.unlink(missing_ok=True)  # from an earlier, larger export: it would count in file_bytes
    with warnings.catch_warnings():
        # sharing one Dim across inputs is the intent; the exporter notes each extra use
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used", category=UserWarning)
        torch.onnx.export(tower, example, str(path), input_names=list(INPUT_NAMES), output_names=["logit"],
                          dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
                          external_data=weights > ONNX_INLINE_BYTES, dynamo=True, verbose=False)


def _load_onnx(path: Path, threads: int | None) -> Scorer:
    _require_onnx("load an ONNX model")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # the exporter may drop an input the graph never reads (e.g. zero-width dense)
    wanted = {i.name for i in session.get_inputs()}

    def score(cat: torch.Tensor, dense: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        feed = {n: t.detach().cpu().numpy() for n, t in zip(INPUT_NAMES, (cat, dense, seq)) if n in wanted}
        return torch.from_numpy(session.run(None, feed)[0])

    return score


def _check_inputs(batch: Inputs) -> Inputs:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 3 and all(isinstance(t, torch.Tensor) for t in batch)):
        raise ValueError("expected a batch (cat, dense, seq) of three tensors")
    cat, dense, seq = batch
    if cat.dim() != 2 or dense.dim() != 2 or seq.dim() != 3:
        raise ValueError(f"expected cat (B, F), dense (B, D), seq (B, S, L); got {tuple(cat.shape)}, "
                         f"{tuple(dense.shape)}, {tuple(seq.shape)} (no sequences: seq of shape (B, 0, 1))")
    if (cat.dtype, dense.dtype, seq.dtype) != (torch.int64, torch.float32, torch.int64):
        raise ValueError(f"expected int64 cat, float32 dense, int64 seq; got {cat.dtype}, {dense.dtype}, {seq.dtype}")
    if not cat.shape[0] == dense.shape[0] == seq.shape[0]:
        raise ValueError(f"batch sizes differ: cat {cat.shape[0]}, dense {dense.shape[0]}, seq {seq.shape[0]}")
    return cat, dense, seq


def _trace_example(example: Inputs) -> Inputs:
    """The example on CPU with at least TRACE_ROWS rows (rows repeated), so tracing never
    sees a batch of 1."""
    rows = example[0].shape[0]
    if rows == 0:
        raise ValueError("the example batch is empty: export needs at least one row")
    example = tuple(t.detach().cpu() for t in example)
    if rows >= TRACE_ROWS:
        return example
    index = torch.arange(TRACE_ROWS) % rows
    return tuple(t[index] for t in example)


def _cpu_tower(model: Ranker) -> MainTower:
    tower = MainTower(model)
    if all(t.device.type == "cpu" for t in [*tower.parameters(), *tower.buffers()]):
        return tower
    # a copy, so exporting does not move the caller's (GPU) model
    return copy.deepcopy(tower).cpu()


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    """Eval mode inside, each submodule's own mode restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    # TorchScript is deprecated upstream (torch 2.13 warns on every trace/save/load); we keep
    # the format for runtimes that still load it, so the warning says nothing new here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


def _missing(packages: Iterable[str]) -> list[str]:
    return [p for p in packages if not _found(p)]


def _found(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # e.g. a module whose __spec__ is None
        return False


def _require_onnx(action: str) -> None:
    missing = _missing(ONNX_DEPS)
    if missing:
        raise ImportError(f"to {action}, install {', '.join(missing)} (not importable): {ONNX_INSTALL}")
