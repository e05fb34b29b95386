"""DiverseDistill's question-answer module and its losses (plain PyTorch, no Ray).

A committee is the big teacher plus K frozen domain experts. For each row the student's
hidden state h (its backbone output) asks each teacher k a question q_k = Q_k h; the
answer is attention over that teacher's intermediate states (its field tokens and its
backbone output, mapped to one width), read out into the student's space:

    a_k = V_k · Σ_t softmax_t(<K_k s_kt, q_k> / √d_q) s_kt

A gate on h (detached: it weighs teachers, it does not shape the student) gives each
teacher an importance w_k per row, a softmax over the teachers present. The student learns

    task + α · KD(student, Σ_k w_k z_k)  +  β · Σ_k w_k (1 − cos(h, a_k))

and the gate learns to make the combined logit predict the label (its BCE, with the
teachers' logits fixed), so a teacher weighs more where it is right. With filtering, a
teacher whose weight is below ``threshold`` / (teachers present) is skipped for that row
(no forward pass), the row's most important teacher always runs, and the weights are
renormalised over the teachers that ran. The module is the trainer's, not the student's:
the exported student is the same model, of the same size, as without a committee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TeacherStates:
    """The shape of one teacher's intermediate states: ``tokens`` states of width
    ``token_dim`` and a hidden vector of width ``hidden_dim``; (0, 0) = a teacher that
    gives its logit only (the big teacher's stored signal)."""

    token_dim: int = 0
    hidden_dim: int = 0

    @property
    def has_states(self) -> bool:
        return self.token_dim > 0


class QuestionAnswer(nn.Module):
    def __init__(self, student_dim: int, teachers: list[TeacherStates], query_dim: int = 32) -> None:
        super().__init__()
        self.teachers = teachers
        self.query_dim = query_dim

        def per_teacher(make: object) -> nn.ModuleList:
            return nn.ModuleList(make(t) if t.has_states else nn.Identity() for t in teachers)  # type: ignore[operator]

        self.query = per_teacher(lambda t: nn.Linear(student_dim, query_dim))
        self.key = per_teacher(lambda t: nn.Linear(t.token_dim, query_dim))
        self.value = per_teacher(lambda t: nn.Linear(t.token_dim, student_dim))
        self.hidden_in = per_teacher(lambda t: nn.Linear(t.hidden_dim, t.token_dim))
        self.gate = nn.Linear(student_dim, len(teachers))
        nn.init.zeros_(self.gate.weight)  # every teacher weighs the same until the labels say otherwise
        nn.init.zeros_(self.gate.bias)

    def importance(self, h: torch.Tensor) -> torch.Tensor:
        """(B, teachers) importance logits from the student's state, detached."""
        return self.gate(h.detach())

    def answer(self, k: int, h: torch.Tensor, tokens: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Teacher ``k``'s answer to the student's question, in the student's space: (B, student_dim)."""
        if not self.teachers[k].has_states:
            raise ValueError(f"teacher {k} of the committee gives no states, only its logit")
        states = torch.cat([tokens, self.hidden_in[k](hidden).unsqueeze(1)], 1)  # (B, T + 1, d_k)
        q = self.query[k](h)
        # broadcast products, not einsum: batched matmuls of a few dozen tokens are slower on CPU
        scores = (self.key[k](states) * q.unsqueeze(1)).sum(-1) / math.sqrt(self.query_dim)
        return self.value[k]((scores.softmax(-1).unsqueeze(-1) * states).sum(1))


def importance_weights(logits: torch.Tensor, present: torch.Tensor,
                       threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, kept), each (B, teachers): a softmax of ``logits`` over the teachers
    ``present`` for the row; with ``threshold`` > 0 the teachers below threshold / (present
    count) are dropped (the row's best one never is) and the rest renormalised. A row with
    no teacher present has all-zero weights."""
    def masked_softmax(mask: torch.Tensor) -> torch.Tensor:
        w = logits.masked_fill(~mask, float("-inf")).softmax(-1)
        return torch.nan_to_num(w, nan=0.0)  # a row with no teacher: all -inf

    w = masked_softmax(present)
    if threshold <= 0:
        return w, present
    count = present.sum(1, keepdim=True).clamp(min=1)
    best = F.one_hot(w.argmax(1), w.shape[1]).bool() & present
    kept = present & ((w >= threshold / count) | best)
    return masked_softmax(kept), kept


def combined_logit(weights: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k z_k per row; a row's teachers without a logit (NaN) have weight 0 there."""
    return (weights * torch.nan_to_num(logits)).sum(1)


def alignment_loss(h: torch.Tensor, weights: torch.Tensor,
                   answers: Sequence[tuple[int, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Σ_k w_k (1 − cos(h, a_k)) over the (row, teacher) pairs answered, averaged over the
    rows; ``answers``: (teacher k, its rows, their answers (rows, student_dim)) per teacher
    that answered, the weights taken as constants."""
    total = h.new_zeros(())
    for k, rows, a in answers:
        cos = F.cosine_similarity(h[rows], a, dim=-1)
        total = total + (weights.detach()[rows, k] * (1.0 - cos)).sum()
    return total / max(h.shape[0], 1)


def gate_loss(weights: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
              rows: torch.Tensor | None = None) -> torch.Tensor:
    """The gate's objective: the combined logit's log loss on the label (the teachers'
    logits fixed), over ``rows`` (labelled rows with at least one teacher)."""
    z = combined_logit(weights, logits.detach())
    if rows is not None:
        if not rows.any():
            return z.sum() * 0.0
        z, y = z[rows], y[rows]
    return F.binary_cross_entropy_with_logits(z, y.float())
