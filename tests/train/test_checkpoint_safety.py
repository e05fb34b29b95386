"""Checkpoints are loaded as data, never as code (plain PyTorch, no Ray): a planted pickle
is refused without running, and every payload the workers save loads back as data only."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from recdistill.data.tensors import TensorLog
from recdistill.models import FeatureSpec, Ranker
from recdistill.online.learner import StreamLearner
from recdistill.online.replay import ReplayBuffer
from recdistill.online.shift import ShiftDetector, profile
from recdistill.online.workers import profiles_from_state, profiles_state
from recdistill.train.checkpoint import UnsafeCheckpointError, load_dir, load_state, plain
from recdistill.train.loop import optimizers, train_step
from recdistill.train.worker import crash_specs
from recdistill.transfer.augment import load_teacher_state

SPEC = FeatureSpec(buckets=(7, 11), num_dense=3)


class _Planted:
    """What an attacker with write access to the checkpoint prefix could leave: unpickling
    it runs a shell command (here: creating a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return os.system, (f"touch {self.marker}",)


def _plant(directory: Path, marker: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "state.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "opts": [], "state": _Planted(marker)}, path)
    return path


def test_a_planted_pickle_in_a_checkpoint_dir_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _plant(tmp_path / "checkpoint_000001", marker)
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        load_dir(path.parent)
    assert not marker.exists()


def test_a_planted_teacher_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    # the transfer stage loads the checkpoint whose path the signal store's teacher.json names
    marker = tmp_path / "pwned"
    path = _plant(tmp_path / "teacher_ckpt", marker)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_teacher_state(str(path.parent))
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        load_teacher_state(str(path))
    assert not marker.exists()


def test_a_checkpoint_dir_without_state_and_a_non_dict_payload(tmp_path: Path) -> None:
    assert load_dir(tmp_path) is None  # a run's final checkpoint holds metrics only
    torch.save([torch.zeros(1)], tmp_path / "state.pt")
    with pytest.raises(UnsafeCheckpointError, match="expected a dict"):
        load_dir(tmp_path)


def _log(n: int, seed: int = 0) -> TensorLog:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, 7, (n,), generator=g), torch.randint(0, 11, (n,), generator=g)], 1)
    return TensorLog(cat=cat,
                     dense=torch.randn(n, 3, generator=g), seq=torch.zeros(n, 0, 1, dtype=torch.long),
                     label=(torch.rand(n, generator=g) < 0.3).float(), sample_rate=torch.ones(n),
                     row_id=torch.arange(n) + 1000 * seed)


def _model() -> Ranker:
    torch.manual_seed(3)
    return Ranker(SPEC, "dcnv2", 4, 1, 8)


def _round_trip(payload: dict, tmp_path: Path) -> dict:
    torch.save(payload, tmp_path / "state.pt")
    return load_state(tmp_path / "state.pt")


def test_the_workers_payloads_load_back_as_data(tmp_path: Path) -> None:
    """What the teacher, student group, online and transfer loops checkpoint: models,
    optimizers (sparse and dense Adam), the replay buffer (rows and its NumPy RNG), the
    shift detector's histograms and NumPy scalars in results."""
    data = _log(300)
    model = _model()
    opts = optimizers(model, 1e-2, 1e-2)
    train_step(model, opts, data.take(slice(0, 100)))
    learner = StreamLearner(_model(), lr=1e-2, embedding_lr=1e-2, interval=3)
    learner.learn(data.take(slice(0, 50)))  # mid-interval: accumulated gradients in the state
    buffer = ReplayBuffer(capacity=120, seed=1)
    for w in range(3):
        buffer.add(_log(100, seed=w), torch.full((100,), float(w)))
    detector = ShiftDetector(0.1, history=2, top_k=3)
    for w in range(3):
        d = _log(200, seed=w)
        detector.push(profile(d.label.numpy(), torch.rand(200).numpy(), d.cat.numpy(), keep=4))
    payload = {"model": model.state_dict(), "opts": [o.state_dict() for o in opts], "learner": learner.state(),
               "buffer": buffer.state(), "detector": profiles_state(detector.state()),
               "curve": plain([{"step": 5, "auc": np.float64(0.7), "rows": np.int64(3)}])}
    back = _round_trip(payload, tmp_path)

    restored = _model()
    restored.load_state_dict(back["model"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
    twin = StreamLearner(_model(), lr=1e-2, embedding_lr=1e-2, interval=3)
    twin.load(back["learner"])
    for x in (learner, twin):
        x.learn(data.take(slice(50, 100)))
        x.learn(data.take(slice(100, 150)))
    assert learner.steps == twin.steps == 1
    assert all(torch.equal(a, b) for a, b in zip(learner.model.state_dict().values(), twin.model.state_dict().values()))
    # a resume on a GPU: the checkpoint loads on the CPU, the model lives on another device
    # (here 'meta'), and the gradients waiting for the interval's end follow the model there
    elsewhere = StreamLearner(_model().to("meta"), lr=1e-2, embedding_lr=1e-2, interval=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*copying from a non-meta parameter")  # meta holds no values
        elsewhere.load(back["learner"])
    assert back["learner"]["grads"] and all(
        p.grad.device.type == "meta" for n, p in elsewhere.model.named_parameters() if n in back["learner"]["grads"])
    other = ReplayBuffer(capacity=120, seed=9)
    other.load(back["buffer"])
    assert torch.equal(other.rows.row_id, buffer.rows.row_id) and torch.equal(other.logits, buffer.logits)
    assert torch.equal(other.sample(16)[0].row_id, buffer.sample(16)[0].row_id)  # the same RNG stream
    again = ShiftDetector(0.1, history=2, top_k=3)
    again.load(profiles_from_state(back["detector"]))
    new = _log(200, seed=7)
    prof = profile(new.label.numpy(), torch.rand(200).numpy(), new.cat.numpy(), keep=4)
    assert again.score(prof) == detector.score(prof)
    assert back["curve"] == [{"step": 5, "auc": 0.7, "rows": 3}] and type(back["curve"][0]["rows"]) is int


def test_failure_hook_specs() -> None:
    assert crash_specs("") == []
    assert crash_specs("teacher:7:/tmp/a; students:12:/tmp/b") == [("teacher", 7, "/tmp/a"), ("students", 12, "/tmp/b")]
    assert crash_specs("transfer-end_to_end:3:/x:y") == [("transfer-end_to_end", 3, "/x:y")]
    with pytest.raises(ValueError, match="'<role>:<step>:<marker file>'.*'teacher:seven:/m'"):
        crash_specs("teacher:seven:/m")
