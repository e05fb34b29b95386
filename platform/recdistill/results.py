"""What a batch run reports per student, typed: the engines build these records and the
report reads them back, so the names results.json uses are spelled here once; and η, the
one figure every engine and phase reports per student.

results.json keeps its flat form (``auc_raw``, ``auc_distill``, ``steps_raw``, ...): it is
what W&B, sweeps and users' notebooks read. ``to_dict``/``from_dict`` convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("raw", "distill")  # a student trained on labels only, and with the teacher's signals
_EARLY = ("stopped_epoch", "best_epoch", "valid_curve")
_NAN = float("nan")


def transferability(p_teacher: float, p_raw: float, p_distill: float) -> float:
    """η = (P_S_distill − P_S_raw) / (P_T − P_S_raw); NaN when the teacher has no gain."""
    gain = p_teacher - p_raw
    return (p_distill - p_raw) / gain if gain > 0 else float("nan")


def leakage_gap(teacher: dict[str, Any]) -> float:
    """The leakage gauge of a teacher record: its signals' AUC on the students' window rows
    minus its AUC on the test split (large and positive: it memorised the rows it scored)."""
    return teacher.get("signal_auc_window", _NAN) - teacher.get("auc", _NAN)


@dataclass
class Scored:
    """One model on the test split. ``gauc`` only where the log has a user field and the
    engine grouped by it."""

    auc: float
    logloss: float
    calibration: float
    gauc: float | None = None
    # the AUC under each Poisson resample of the test rows, minus the unresampled AUC
    # (``metrics.BootstrapAUC``); replicate k is the same rows for every model of a run
    auc_boot: list[float] | None = None

    @classmethod
    def of(cls, m: dict[str, Any], suffix: str = "") -> Scored:
        """From a metrics dict; what an older or partial results.json lacks reads as NaN."""
        return cls(m[f"auc{suffix}"], m.get(f"logloss{suffix}", _NAN), m.get(f"calibration{suffix}", _NAN),
                   m.get(f"gauc{suffix}"), m.get(f"auc_boot{suffix}"))

    def fields(self, suffix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {f"auc{suffix}": self.auc, f"logloss{suffix}": self.logloss,
                               f"calibration{suffix}": self.calibration}
        if self.gauc is not None:
            out[f"gauc{suffix}"] = self.gauc
        if self.auc_boot is not None:
            out[f"auc_boot{suffix}"] = self.auc_boot
        return out


@dataclass
class Training:
    """One training of a student, raw or distilled: its score, speed and where it stopped
    (``train.evaluate.EarlyStop``'s summary)."""

    scored: Scored
    samples_per_s: float
    steps: int
    early: dict[str, Any]  # stopped_epoch, best_epoch, valid_curve
    seconds: float | None = None  # training time inside the Train worker (the Ray engine)

    @classmethod
    def of(cls, d: dict[str, Any], kind: str) -> Training:
        sfx = f"_{kind}"
        return cls(Scored.of(d, sfx), d.get(f"samples_per_s{sfx}", _NAN), d.get(f"steps{sfx}", 0),
                   {k: d.get(f"{k}{sfx}") for k in _EARLY}, d.get(f"train_seconds{sfx}"))

    def fields(self, kind: str) -> dict[str, Any]:
        sfx = f"_{kind}"
        out: dict[str, Any] = {**self.scored.fields(sfx), f"samples_per_s{sfx}": self.samples_per_s}
        if self.seconds is not None:
            out[f"train_seconds{sfx}"] = self.seconds
        out[f"steps{sfx}"] = self.steps
        out.update({f"{k}{sfx}": self.early.get(k) for k in _EARLY})
        return out


@dataclass
class StudentResult:
    """A student of a batch run: who it is, the rows it had, and its raw and distilled
    trainings. ``eta`` is against the teacher whose signals it got."""

    name: str
    arch: str
    towers: str
    params: int
    rows: int  # rows it has labels for and trained on (its sample of the students' window)
    rows_from: str  # random or recent rows of the window
    signal_coverage: float  # share of its rows that had a teacher signal
    raw: Training
    distill: Training
    eta: float
    raw_reused: bool | None = None  # the Ray engine reuses stored raw students
    unlabelled_rows: int = 0  # rows the distilled model also trained on, without their labels
    unlabelled_without_signal: int = 0  # rows picked as unlabelled but left out: no teacher signal
    representations: list[str] | None = None  # LoopFM: the teacher representations it reads (raw and distilled)
    baseline: str | None = None  # the student of the same shape without them: LoopFM's transfer ratios' base

    def training(self, kind: str) -> Training:
        return self.raw if kind == "raw" else self.distill

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "arch": self.arch, "towers": self.towers, "params": self.params,
                               "rows": self.rows, "rows_from": self.rows_from}
        if self.raw_reused is not None:
            out["raw_reused"] = self.raw_reused
        out["signal_coverage"] = self.signal_coverage
        out["unlabelled_rows"] = self.unlabelled_rows
        out["unlabelled_without_signal"] = self.unlabelled_without_signal
        for kind in KINDS:
            out.update(self.training(kind).fields(kind))
        out["eta"] = self.eta
        if self.representations:
            out["representations"] = self.representations
            out["baseline"] = self.baseline
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentResult:
        return cls(d["name"], d["arch"], d["towers"], d["params"], d.get("rows", 0), d.get("rows_from", ""),
                   d.get("signal_coverage", _NAN), Training.of(d, "raw"), Training.of(d, "distill"),
                   d["eta"], d.get("raw_reused"), d.get("unlabelled_rows", 0), d.get("unlabelled_without_signal", 0),
                   d.get("representations"), d.get("baseline"))
