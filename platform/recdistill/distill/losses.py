"""Task and distillation losses on logits (PyTorch only). Shapes: all (B,); scalar out.

Every distillation loss takes the student logit ``z_s``, the teacher logit ``z_t`` (already
re-corrected by the debias step when that is on) and a temperature ``T``. A ``mask``
(B,) bool marks rows that have a teacher signal; rows without one contribute nothing and
the mean is over the rows that do (0 when none do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def task_loss(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on click labels; ``mask`` keeps the rows that have one (rows
    made up by augmentation have none)."""
    if mask is None:
        return F.binary_cross_entropy_with_logits(z, y.to(z.dtype))
    return _masked_mean(F.binary_cross_entropy_with_logits(z, y.to(z.dtype), reduction="none"), mask)


def soft_ce(z_s: torch.Tensor, z_t: torch.Tensor, T: float = 1.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """T²·BCE(z_s/T, σ(z_t/T)): at T = 1 the soft-label cross-entropy of Rec-Distill Eq. 8,
    −p_T log p_S − (1−p_T) log(1−p_S), whose gradient (p_S − p_T) does not vanish."""
    p_t = torch.sigmoid(z_t.detach() / T)
    per_row = F.binary_cross_entropy_with_logits(z_s / T, p_t, reduction="none")
    return T * T * _masked_mean(per_row, mask)


def kl(z_s: torch.Tensor, z_t: torch.Tensor, T: float = 1.0,
       mask: torch.Tensor | None = None) -> torch.Tensor:
    """T²·KL(p_T ‖ p_S) for Bernoulli outputs (Rec-Distill Eq. 2): soft_ce minus the teacher's
    entropy, so the same gradient and a minimum of 0."""
    zt = z_t.detach() / T
    zs = z_s / T
    p_t = torch.sigmoid(zt)
    # log p = −softplus(−z), log(1−p) = −softplus(z): stable for large |z|
    per_row = (p_t * (F.softplus(-zs) - F.softplus(-zt))
               + (1 - p_t) * (F.softplus(zs) - F.softplus(zt)))
    return T * T * _masked_mean(per_row, mask)


def mse(z_s: torch.Tensor, z_t: torch.Tensor, T: float = 1.0,
        mask: torch.Tensor | None = None) -> torch.Tensor:
    """(σ(z_s/T) − σ(z_t/T))²: the probability-MSE baseline whose gradient vanishes at the tails."""
    diff = torch.sigmoid(z_s / T) - torch.sigmoid(z_t.detach() / T)
    return _masked_mean(diff * diff, mask)


DISTILL_LOSSES = {"soft_ce": soft_ce, "kl": kl, "mse": mse}
