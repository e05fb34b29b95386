"""Checkpoint payloads are data, never code.

A ``state.pt`` is read back by the driver and every worker (resumed runs, the transfer
stage's teacher), and anyone who can write to the checkpoint or signal-store prefix can
plant one. So it is loaded with ``torch.load(weights_only=True)``, which unpickles only
tensors and plain containers (dict, list, tuple, str, int, float, bool, None), and every
payload we save is made of those: models and optimizers as their state dicts, NumPy
arrays and RNG states as tensors, dicts and ints.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

STATE_FILE = "state.pt"


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds something other than tensors and plain containers."""


def load_state(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """The payload of a ``state.pt`` file; refuses (without running it) anything that
    would need code to rebuild, naming the file."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is mostly advice to turn the check off; keep the line naming the object
        why = [line for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        raise UnsafeCheckpointError(
            f"checkpoint {path}: refused to load it, it holds objects other than tensors and plain containers "
            f"(a checkpoint from elsewhere, or tampered with?)" + (f": {why[0].strip()[:300]}" if why else "")) from e
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"checkpoint {path}: expected a dict payload, got {type(state).__name__}")
    return state


def load_dir(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The payload of a checkpoint directory's ``state.pt``; None when it has none (the
    final checkpoint of a run holds metrics only)."""
    path = os.path.join(directory, STATE_FILE)
    return load_state(path) if os.path.exists(path) else None


def plain(obj: Any) -> Any:
    """``obj`` with NumPy scalars and arrays made Python numbers and tensors, nested
    containers converted too: results carried in a checkpoint load back as data."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    return obj



def save_weights(model: torch.nn.Module | dict[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """A model's state dict (or the state dict itself) as safetensors: tensors only,
    nothing to unpickle when read (model artifacts, ``artifacts.model_dir``)."""
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
