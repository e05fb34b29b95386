"""The artifacts a batch run leaves: ``runs/<run>/models/teacher/`` and, per student,
``models/<student>/raw/`` and ``models/<student>/distill/`` (``model_dir`` says what one
holds). The engines hand over each model's weights (the model itself, or the safetensors
file its Train worker put in the final checkpoint); this adds the run's preprocessing,
sampling and provenance. A model reused from the signal store (a teacher, a raw student
another run trained) gets its weights from there, so it too leaves the run as a file."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from recdistill.artifacts.model_dir import describe_model, git_commit, sampling_record, write_artifact
from recdistill.config import ExperimentConfig, dump_config, to_dict
from recdistill.data.preprocess import Preprocessor
from recdistill.models import FeatureSpec
from recdistill.train.keys import data_fingerprint
from recdistill.train.plan import student_spec

MODELS_DIR = "models"
TEACHER = "teacher"
# why a model reused from the signal store has no artifact
PREDATES = "reused from a signal store written before it kept model weights; retrain it to get one"
_METRICS = ("auc", "logloss", "calibration", "gauc", "rows", "window")


def model_name(student: str, kind: str) -> str:
    """A student's model as results and artifacts name it: ``<student>/<kind>``."""
    return f"{student}/{kind}"


def windowed(name: str, window: int | None) -> str:
    """A model as it was after an online window: ``windows/w<window>/<name>`` (None: ``name``)."""
    return name if window is None else f"windows/w{window:04d}/{name}"


class RunModels:
    """Writes the run's artifacts and keeps what it wrote (and what it could not, and why)
    for results.json's ``models``."""

    def __init__(self, cfg: ExperimentConfig, preprocessor: Preprocessor, spec: FeatureSpec, seq_len: int,
                 teacher_key: str | None, log: Callable[[str], None] = print) -> None:
        self.cfg, self.pre, self.spec, self.seq_len, self.teacher_key, self.log = \
            cfg, preprocessor, spec, seq_len, teacher_key, log
        self.root = cfg.run.out_dir / MODELS_DIR
        self.written: dict[str, str] = {}
        self.missing: dict[str, str] = {}
        self._common = {"run": cfg.run.name, "seed": cfg.run.seed, "teacher_key": teacher_key,
                        "data_fingerprint": data_fingerprint(cfg), "git_commit": git_commit(),
                        "data": to_dict(cfg.data),  # what `recdistill score --split` re-cuts a log by
                        "config_hash": hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:24]}

    def teacher(self, weights: Path | torch.nn.Module | None, metrics: dict[str, Any], why_missing: str = "",
                window: int | None = None) -> None:
        t = self.cfg.teacher
        self._write(windowed(TEACHER, window), "teacher", weights, describe_model(t, "single", self.spec, self.seq_len),
                    t.negative_keep_rate, metrics, why_missing)

    def student(self, i: int, kind: str, weights: Path | torch.nn.Module | None, metrics: dict[str, Any],
                why_missing: str = "", window: int | None = None) -> None:
        s = self.cfg.students[i]
        self._write(windowed(model_name(s.name, kind), window), f"student-{kind}", weights,
                    describe_model(s, s.towers, student_spec(self.cfg, self.spec, i), self.seq_len),
                    s.negative_keep_rate, metrics, why_missing,
                    {"student": s.name, "kind": kind, "alpha": None if kind == "raw" else s.alpha})

    def _write(self, name: str, role: str, weights: Path | torch.nn.Module | None, model: dict[str, Any],
               negative_keep: float, metrics: dict[str, Any], why_missing: str, extra: dict[str, Any] | None = None
               ) -> None:
        if weights is None:
            self.missing[name] = why_missing or "no weights were handed over"
            self.log(f"[models] {name}: no artifact ({self.missing[name]})")
            return
        out = self.root / name
        provenance = {**self._common, "model": name, **(extra or {}),
                      "metrics": {k: metrics[k] for k in _METRICS if k in metrics}}
        write_artifact(out, name, role, weights, model, self.pre,
                       sampling_record(negative_keep, self.cfg.data.negative_keep_rate), provenance)
        self.written[name] = str(out.relative_to(self.cfg.run.out_dir))

    def stored_teacher(self, store: Any, generation: str, metrics: dict[str, Any]) -> None:
        """The teacher's artifact from the weights the store keeps beside its signals (the
        run trained it, or reused it)."""
        assert self.teacher_key is not None
        with self.from_store(store, store.teacher_weights_path(self.teacher_key, generation)) as w:
            self.teacher(w, metrics, PREDATES)

    @contextlib.contextmanager
    def from_store(self, store: Any, path: str) -> Iterator[Path | None]:
        """A local copy of weights the signal store keeps, for the duration of the block
        (None when it has none: a model trained before the store kept weights)."""
        with tempfile.TemporaryDirectory(prefix="recdistill-weights-") as d:
            local = Path(d) / "model.safetensors"
            yield local if store.get_file(path, local) else None

    def summary(self) -> dict[str, Any]:
        """results.json's ``models``: each model's artifact directory (relative to the run)."""
        out: dict[str, Any] = {"dir": MODELS_DIR, "written": dict(self.written)}
        if self.missing:
            out["missing"] = dict(self.missing)
        if self.written:
            self.log(f"[models] {len(self.written)} artifact(s) under {self.root}: {', '.join(self.written)}")
        return out
