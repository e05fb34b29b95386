"""The single-process engine: one experiment, end to end, on one process — teacher → N
students, raw and distilled. The reference the Ray engine is checked against.

1. open the log and cut time-ordered splits (``engine.prepare.prepare_log``);
2. train the teacher on its sample of the train split in log order, recording its
   forward-distillation logits (the logit of each row before it learned from it), or
   making its signals as ``teacher.signals`` says (``engine.local_teacher``);
3. train each student twice on its own sample, raw (no teacher) and distilled, from the
   same initial weights (the distilled one also on its unlabelled rows, if it has any);
   every model is validated on the valid split after each epoch (or every ``eval_every``
   steps) and, with ``patience``, stops early and keeps its best weights;
4. evaluate on the test split: AUC, LogLoss, calibration per model, η per student, and
   the oracle AUC when the log knows the true click probability. The teacher reported
   (η's denominator) is the one whose signals the students got: as its recording pass
   left it; one trained on after that is reported beside it as ``teacher.final``;
5. write ``results.json``, the resolved ``config.yaml`` and ``report.md`` to the run dir (a new
   one: an earlier run's directory is refused unless ``run.overwrite``, see ``run_dir``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from recdistill.artifacts.serving_cost import measure_run_students
from recdistill.artifacts.run_models import RunModels
from recdistill.config import ExperimentConfig, signal_mode
from recdistill.data.sampling import student_row_mask, unlabelled_row_mask
from recdistill.data.tensors import TensorLog, collect
from recdistill.data.windows import STUDENT_WINDOW
from recdistill.engine.local_teacher import train_teacher
from recdistill.engine.prologue import open_run, prepare
from recdistill.metrics import auc
from recdistill.report.experiment import write_results
from recdistill.results import KINDS, Scored, StudentResult, Training, leakage_gap, transferability
from recdistill.summary import summarize
from recdistill.tracking import flatten
from recdistill.train.keys import teacher_key
from recdistill.train.evaluate import Validator, evaluate, validation_auc
from recdistill.train.loop import fit, pick_device, predict
from recdistill.train.plan import (build_model, check_validation, early_fields, feature_spec, sequence_length,
                                   student_init_seed, student_objective, student_rows, student_sample_seed)


def local_validator(valid: TensorLog | None, device: torch.device, batch_size: int = 16_384) -> Validator | None:
    """Validation AUC of named models on the valid split held in memory (None: no split)."""
    if valid is None:
        return None
    return lambda models: validation_auc(
        models, (valid.take(slice(s, s + batch_size)).to(device) for s in range(0, len(valid), batch_size)))


def _collect_optional(ds: Any, schema: Any, seq_len: int) -> TensorLog | None:
    """A split that may be empty (data.splits can give valid 0): None then."""
    ds = ds.materialize()
    return collect(ds, schema, seq_len) if ds.count() else None


def run_local(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The single-process engine: the reference the Ray engine is checked against."""
    opened = open_run(cfg)
    device = pick_device(cfg.run.device)
    prepared = prepare(cfg, log, opened=opened)
    cfg = prepared.cfg
    schema = prepared.schema
    seq_len = sequence_length(cfg)
    train = collect(prepared.splits["train"], schema, seq_len)
    test = collect(prepared.splits["test"], schema, seq_len or int(train.seq.shape[-1]))
    valid = _collect_optional(prepared.splits["valid"], schema, seq_len or int(train.seq.shape[-1]))
    check_validation(cfg, len(valid) if valid is not None else 0)
    validate = local_validator(valid, device)
    prepared.rejects().check_budget(cfg.data.error_budget, cfg.data.path or "synthetic log")
    spec = feature_spec(schema, prepared.preprocessor.buckets)
    user_col = schema.categorical.index(schema.user_field) if schema.user_field in schema.categorical else None
    boot = cfg.run.bootstrap
    log(f"[data] train {len(train):,} rows (CTR {train.label.mean():.4f}), valid {len(valid) if valid else 0:,}, "
        f"test {len(test):,} rows; device {device}")

    t = cfg.teacher
    mode, folds = signal_mode(t.signals)
    log(f"[teacher] {t.arch}, signals {mode}" + (f" ({folds} fold teachers)" if mode == "crossfit" else ""))
    taught = train_teacher(cfg, train, test, spec, device, validate, user_col, boot)
    teacher, t_stats, signals, signal_auc = taught.model, taught.stats, taught.signals, taught.signal_auc
    in_window = train.window == STUDENT_WINDOW
    teacher_metrics = taught.metrics  # η's teacher: the one whose signals the students get
    early = t_stats.early.summary()
    log(f"[teacher] AUC {teacher_metrics['auc']:.4f} ({t_stats.samples_per_s:,.0f} samples/s); {mode} "
        f"signals' AUC on history/window rows: {signal_auc[0]:.4f}/{signal_auc[1]:.4f}; stopped in epoch "
        f"{early['stopped_epoch']}/{t.epochs}, best valid epoch {early['best_epoch']}")
    results: dict[str, Any] = {
        "engine": "local",
        "teacher": {"arch": t.arch, "params": teacher.num_params(), "rows": taught.rows, "signals": mode,
                    "samples_per_s": t_stats.samples_per_s, "signal_auc_history": signal_auc[0],
                    "signal_auc_window": signal_auc[1], "steps": taught.steps, "pass_steps": t_stats.pass_steps,
                    "signal_rows": taught.signal_rows,
                    **teacher_metrics, "signal_auc": teacher_metrics["auc"], **early_fields(early)},
        "students": [],
    }
    results["teacher"]["leakage_gap"] = leakage_gap(results["teacher"])
    if taught.folds:
        results["teacher"]["folds"] = taught.folds
    if taught.final is not None:  # it learned on (or went back) after recording
        results["teacher"]["final"] = {**taught.final, "epochs": early["stopped_epoch"],
                                       "step": t_stats.early.final_step}
        log(f"[teacher] after its recording pass: AUC {teacher_metrics['auc']:.4f} (η's teacher); as trained on: "
            f"{taught.final['auc']:.4f}")
    models = RunModels(cfg, prepared.preprocessor, spec, seq_len, teacher_key(cfg), log)
    models.teacher(teacher, results["teacher"].get("final") or teacher_metrics)  # the weights as trained last
    if test.p_true is not None:
        results["oracle"] = {"auc": auc(test.label.numpy(), test.p_true.numpy())}

    for i, s in enumerate(cfg.students):
        share, min_recency = student_rows(cfg, i)
        recency = train.recency.numpy() if train.recency is not None else None
        keep = student_row_mask(train.row_id.numpy(), train.label.numpy(), recency, share, s.negative_keep_rate,
                                student_sample_seed(cfg, i), min_recency)
        keep &= in_window.numpy()
        s_idx = torch.from_numpy(np.flatnonzero(keep))
        zt = signals[s_idx]
        # the distilled model's rows: its sample and, with unlabelled.share, rows it has no
        # label for (a seeded share of the window's other rows that have a signal), in log order
        has_signal = ~torch.isnan(signals).numpy()
        unl = unlabelled_row_mask(train.row_id.numpy(), keep, s.unlabelled.share, student_sample_seed(cfg, i))
        unl &= in_window.numpy()
        u_idx = torch.from_numpy(np.flatnonzero(keep | (unl & has_signal)))
        u_rows = int((unl & has_signal).sum())
        trained: dict[str, Training] = {}
        for kind, idx in (("raw", s_idx), ("distill", u_idx)):
            obj = student_objective(cfg, i, kind == "distill")
            model = build_model(spec, s, s.towers, student_init_seed(cfg, i))
            stats, _ = fit(model, train.take(idx), epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                           embedding_lr=s.embedding_lr, device=device, objective=obj,
                           teacher_logits=signals[idx] if kind == "distill" else None,
                           label_mask=torch.from_numpy(keep[idx.numpy()]) if kind == "distill" and u_rows else None,
                           validate=validate, eval_every=s.eval_every, patience=s.patience)
            metrics = evaluate(predict(model, test, device), test, s.negative_keep_rate, user_col, boot)
            models.student(i, kind, model, metrics)
            scored = Scored.of(metrics)
            trained[kind] = Training(scored, stats.samples_per_s, stats.steps, early_fields(stats.early.summary()))
        raw, dist = trained["raw"], trained["distill"]
        entry = StudentResult(s.name, s.arch, s.towers, model.num_params(), len(s_idx), s.rows,
                              float((~torch.isnan(zt)).float().mean()), raw, dist,
                              transferability(teacher_metrics["auc"], raw.scored.auc, dist.scored.auc),
                              unlabelled_rows=u_rows,
                              unlabelled_without_signal=int((unl & ~has_signal).sum()))
        results["students"].append(entry.to_dict())
        log(f"[student {s.name}] AUC raw {raw.scored.auc:.4f} → distilled {dist.scored.auc:.4f}, η {entry.eta:.2f}")
    results["models"] = models.summary()
    measure_run_students(cfg.run.out_dir, results, cfg.run.serving, log)
    results["summary"] = summarize([results], cfg.run.pairs)  # one seed: intervals over the test rows
    results["data"] = prepared.describe()
    results["seconds"] = time.perf_counter() - opened.t_start
    results["tracking"] = opened.tracking_info()
    written = write_results(cfg, results, log)
    log_curves(opened.trackers, results)
    opened.finish(results, written)
    return results


def log_curves(trackers: Any, results: dict[str, Any]) -> None:
    """The validation curves as history rows on the trackers' step axes (this engine trains
    in the driver: its rows are logged when the run ends, not as they come)."""
    t = results["teacher"]
    for c in t.get("valid_curve") or []:
        trackers.log(flatten("teacher", {"step": c["step"], "epoch": c["epoch"], "valid_auc": c["auc"]}))
    epochs: dict[int, dict[str, Any]] = {}
    for s in results["students"]:
        for kind in KINDS:
            for c in s.get(f"valid_curve_{kind}") or []:  # the epoch's last validation
                epochs.setdefault(c["epoch"], {}).setdefault(s["name"], {})[kind] = {"valid_auc": c["auc"],
                                                                                     "steps": c["step"]}
    for e in sorted(epochs):
        trackers.log(flatten("student", {"epoch": e, **epochs[e]}))
