"""Sampling-aware debias (Rec-Distill §4.3.3, Eq. 12–14), in logit space.

Eq. 12 corrects a raw logit z into ŷ = 1 / (1 + (r_s/p_X)·(e^{−z} + 1 − r_+ + b_s)). Its
logit is −log(r_s/p_X) − log(e^{−z} + 1 − r_+ + b_s), computed here without leaving log
space. With r_+ = 1, b_s = 0, p_X = 1 it is the classic down-sampling correction
z − log r_s, with r_s = 1 / (negative keep rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingCorrection:
    r_s: float = 1.0  # negative-sampling ratio: 1 / negative keep rate
    r_plus: float = 1.0  # nominal positive retention
    p_x: float = 1.0  # effective positive retention
    b_s: float = 0.0  # additive bias

    @classmethod
    def from_negative_keep_rate(cls, keep: float) -> "SamplingCorrection":
        if not 0 < keep <= 1:
            raise ValueError(f"negative keep rate must be in (0, 1], got {keep}")
        return cls(r_s=1.0 / keep)

    def logit(self, z: torch.Tensor) -> torch.Tensor:
        """Corrected logit f(z) (the logit of ŷ in Eq. 12)."""
        c = 1.0 - self.r_plus + self.b_s
        scale = math.log(self.r_s / self.p_x)
        if c == 0.0:
            return z - scale
        if c < 0 and c <= -1.0:
            raise ValueError(f"1 − r_+ + b_s = {c} makes Eq. 12 undefined")
        return -scale - torch.log(torch.exp(-z) + c)

    def prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(z))


def distill_targets(z_teacher_raw: torch.Tensor, z_student_raw: torch.Tensor,
                    student: SamplingCorrection, teacher: SamplingCorrection,
                    debias: bool, debias_with: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher logit, student logit) that the distillation loss compares.

    debias_with="student": T2' = f_S(T1) against S2 = f_S(S1) (Eq. 13–14);
    "teacher": the ablation T2 = f_T(T1) against S2; debias off: raw T1 against raw S1.
    """
    if not debias:
        return z_teacher_raw, z_student_raw
    s2 = student.logit(z_student_raw)
    if debias_with == "student":
        return student.logit(z_teacher_raw), s2
    if debias_with == "teacher":
        return teacher.logit(z_teacher_raw), s2
    raise ValueError(f"debias_with={debias_with!r}: expected 'student' or 'teacher'")
