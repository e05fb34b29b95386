"""The single-process engine's teacher and its signals, in each ``teacher.signals`` mode:

- forward: the logits of its first pass over its sample, each before it learned the row;
- posthoc: the trained teacher scores every train row (leaky, for comparison);
- crossfit:K: K teachers, teacher k trained on the history and the window outside fold k
  (``data.folds``), scoring fold k; η's teacher figures are the K teachers' mean.

The Ray engine (``engine.teacher``) makes the same signals from the same models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recdistill.config import ExperimentConfig, signal_mode
from recdistill.data.folds import fold_of
from recdistill.data.tensors import TensorLog
from recdistill.data.windows import STUDENT_WINDOW
from recdistill.metrics import auc
from recdistill.models import FeatureSpec, Ranker
from recdistill.train.evaluate import Validator, evaluate
from recdistill.train.loop import FitStats, fit, predict
from recdistill.train.plan import build_model, sample_index, teacher_init_seed, teacher_sample_seed


@dataclass
class LocalTeacher:
    model: Ranker  # the teacher artifact (crossfit: fold 0's)
    stats: FitStats  # its training (crossfit: fold 0's; ``steps`` and ``rows`` are over every fold)
    signals: torch.Tensor  # per train row; NaN = no signal
    metrics: dict[str, Any]  # η's teacher on test: the one whose signals the students get
    signal_auc: list[float]  # on the history and the window rows it gave signals for
    signal_rows: dict[str, int]
    rows: int  # the rows it trained on (crossfit: summed over the folds)
    steps: int
    folds: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None  # forward: the teacher as trained on after its recording pass


def train_teacher(cfg: ExperimentConfig, train: TensorLog, test: TensorLog, spec: FeatureSpec,
                  device: torch.device, validate: Validator | None, user_col: int | None,
                  boot: int) -> LocalTeacher:
    t = cfg.teacher
    mode, folds = signal_mode(t.signals)
    t_idx = sample_index(train, t.sampling_ratio, t.negative_keep_rate, teacher_sample_seed(cfg))
    in_window = (train.window == STUDENT_WINDOW).numpy()

    def scored(model: Ranker) -> dict[str, Any]:
        return evaluate(predict(model, test, device), test, t.negative_keep_rate, user_col, boot)

    def trained(idx: torch.Tensor, record: bool, recorded: dict[str, Any]) -> tuple[Ranker, FitStats, Any]:
        model = build_model(spec, t, "single", teacher_init_seed(cfg))
        stats, logits = fit(model, train.take(idx), epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                            embedding_lr=t.embedding_lr, device=device, record=record, validate=validate,
                            eval_every=t.eval_every, patience=t.patience,
                            on_pass_end=(lambda m: recorded.update(scored(m))) if record else None)
        return model, stats, logits

    def gauge(idx: np.ndarray, z: torch.Tensor) -> tuple[list[float], dict[str, int]]:
        y, w = train.label[idx].numpy(), in_window[idx]
        return ([auc(y[~w], z[~w].numpy()), auc(y[w], z[w].numpy())],
                {"history": int((~w).sum()), "window": int(w.sum())})

    signals = torch.full((len(train),), float("nan"))
    if mode != "crossfit":
        recorded: dict[str, Any] = {}
        model, stats, logits = trained(t_idx, mode == "forward", recorded)
        if mode == "forward":
            signals[t_idx] = logits
            sig_auc, sig_rows = gauge(t_idx.numpy(), logits)
            final = scored(model) if stats.early.final_step != stats.pass_steps else None
            return LocalTeacher(model, stats, signals, recorded, sig_auc, sig_rows, len(t_idx), stats.steps,
                                final=final)
        signals = predict(model, train, device)  # posthoc: every train row, by the teacher as trained
        sig_auc, sig_rows = gauge(np.arange(len(train)), signals)
        return LocalTeacher(model, stats, signals, scored(model), sig_auc, sig_rows, len(t_idx), stats.steps)

    fold = fold_of(train.row_id.numpy(), folds)
    in_sample = np.zeros(len(train), dtype=bool)
    in_sample[t_idx.numpy()] = True
    runs, sample = [], 0
    for k in range(folds):
        idx = np.flatnonzero(in_sample & (~in_window | (fold != k)))
        sample += len(idx)
        model, stats, _ = trained(torch.from_numpy(idx), False, {})
        held = np.flatnonzero(in_window & (fold == k))
        z = predict(model, train.take(torch.from_numpy(held)), device)
        signals[held] = z
        m = scored(model)
        sig_auc, sig_rows = gauge(held, z)
        runs.append((model, stats, m, sig_auc, sig_rows))
    metrics = {k: float(np.mean([r[2][k] for r in runs])) for k, v in runs[0][2].items()
               if isinstance(v, float)}  # the K teachers' mean (auc_boot is per model: left out)
    fold_rows = [r[4]["window"] for r in runs]
    return LocalTeacher(
        runs[0][0], runs[0][1], signals, metrics, [float("nan"), float(np.mean([r[3][1] for r in runs]))],
        {"history": 0, "window": int(sum(fold_rows))}, sample,
        sum(r[1].steps for r in runs),
        [{"auc": r[2]["auc"], "logloss": r[2]["logloss"], "signal_auc_window": r[3][1], "signal_rows": r[4]["window"],
          "steps": r[1].steps, "rows": r[1].rows} for r in runs])
