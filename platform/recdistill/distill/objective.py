"""The student objective per tower (Rec-Distill §4.3): main = task; aux = task + α·distill.

``form="free_alpha"``: L_aux = L_task + α·L_distill, α free (the distill loss can be ~100×
smaller than the task loss, so α brings them to the same order). ``form="convex"``:
α·L_distill + (1−α)·L_task (CrossAdapt's weights that sum to 1). A single-tower student puts
both on its one head. ``alpha == 0`` or no teacher signal trains the raw student.
Rows a student has no label for (``unlabelled_alpha`` set) add α_u·L_distill over those rows
to the aux loss; their task loss is masked, so the main tower of a decoupled student never
learns from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recdistill.distill.debias import SamplingCorrection, distill_targets
from recdistill.distill.losses import DISTILL_LOSSES, task_loss


@dataclass(frozen=True)
class Objective:
    alpha: float
    loss: str = "soft_ce"
    temperature: float = 1.0
    form: str = "free_alpha"
    debias: bool = True
    debias_with: str = "student"
    student_sampling: SamplingCorrection = SamplingCorrection()
    teacher_sampling: SamplingCorrection = SamplingCorrection()
    # rows without a label (``label_mask`` False) as their own term: None = one distill mean
    # over every row with a signal, at ``alpha`` (the transfer stage's augmented rows);
    # a weight = the unlabelled rows' distill loss is a mean over them, at that weight, with
    # their own sampling correction (they are not negative down-sampled: labels do not pick them)
    unlabelled_alpha: float | None = None
    unlabelled_sampling: SamplingCorrection = SamplingCorrection()

    def __post_init__(self) -> None:
        if self.loss not in DISTILL_LOSSES:
            raise ValueError(f"distill loss {self.loss!r}: expected one of {', '.join(DISTILL_LOSSES)}")
        if self.form not in ("free_alpha", "convex"):
            raise ValueError(f"form={self.form!r}: expected 'free_alpha' or 'convex'")
        if self.form == "convex" and not 0 <= self.alpha <= 1:
            raise ValueError(f"form=convex needs 0 <= alpha <= 1, got {self.alpha}")

    def __call__(self, main: torch.Tensor, aux: torch.Tensor, decoupled: bool, y: torch.Tensor,
                 z_teacher: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None,
                 label_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms for one batch; ``total`` is what to backpropagate. ``mask``: rows with a
        teacher signal; ``label_mask``: rows with a click label (None = all)."""
        l_main = task_loss(main, y, label_mask)
        out = {"task_main": l_main}
        if z_teacher is None or (self.alpha == 0 and not self.unlabelled_alpha):
            l_aux_task = task_loss(aux, y, label_mask) if decoupled else l_main
            out["total"] = l_main + (l_aux_task if decoupled else 0)
            return out
        split = self.unlabelled_alpha is not None and label_mask is not None
        has = mask if mask is not None else torch.ones_like(y, dtype=torch.bool)
        l_kd = self._distill(z_teacher, aux, has & label_mask if split else mask, self.student_sampling)
        l_aux_task = task_loss(aux, y, label_mask) if decoupled else l_main
        if self.form == "free_alpha":
            l_aux = l_aux_task + self.alpha * l_kd
        else:
            l_aux = self.alpha * l_kd + (1 - self.alpha) * l_aux_task
        out["distill"] = l_kd
        if split:
            l_u = self._distill(z_teacher, aux, has & ~label_mask, self.unlabelled_sampling)
            l_aux = l_aux + self.unlabelled_alpha * l_u
            out["distill_unlabelled"] = l_u
        out["total"] = (l_main + l_aux) if decoupled else l_aux
        return out

    def _distill(self, z_teacher: torch.Tensor, aux: torch.Tensor, mask: torch.Tensor | None,
                 student_sampling: SamplingCorrection) -> torch.Tensor:
        t, s = distill_targets(z_teacher, aux, student_sampling, self.teacher_sampling, self.debias, self.debias_with)
        return DISTILL_LOSSES[self.loss](s, t, self.temperature, mask)
