"""A committee of teachers in the student group (DiverseDistill; plain PyTorch, no Ray).

The big teacher's logit comes with the stream, as for every distilled student. The
domain experts are frozen models with the student's shape, loaded in the student worker
and run forward on each batch of the members that use them (recomputed, not stored: an
expert costs what a student's forward pass costs, and its states are a field-token set
per row, far more bytes than a logit). Members by ``students.N.distill_from``:
- ``expert:K``: KD from expert K's logit alone;
- ``average``: KD from the mean of every teacher's logit (the naive multi-teacher baseline);
- ``committee`` / ``filtered``: the question-answer module (``distill.committee``); the
  filtered member skips, per row, the teachers its importance gate puts below the threshold.

Every member counts the teachers' forward passes it ran (and the stored signals it read)
against those it could have, so the saving of filtering is measured, not assumed.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from recdistill.config import ExperimentConfig, StudentConfig, committee_source
from recdistill.data.tensors import TensorLog
from recdistill.distill.committee import (QuestionAnswer, TeacherStates, alignment_loss, combined_logit, gate_loss,
                                          importance_weights)
from recdistill.models import FeatureSpec, Ranker
from recdistill.train.loop import batch_loss, optimizer_step, train_step

if TYPE_CHECKING:
    from recdistill.train.group import Member

EXPERT = "expert"


def expert_config(cfg: ExperimentConfig) -> StudentConfig:
    """The experts' shape and schedule: the first student's (the committee's experts share
    the student's architecture), one tower, on every row of their slice."""
    return dataclasses.replace(cfg.students[0], name=EXPERT, towers="single", tower_width=0, sampling_ratio=1.0,
                               negative_keep_rate=1.0, rows="random", alpha=0.0, distill_from="teacher")


def expert_name(k: int) -> str:
    return f"{EXPERT}{k}"


def build_expert(cfg: ExperimentConfig, spec: FeatureSpec, k: int, sparse_embeddings: bool = True) -> Ranker:
    from recdistill.train.plan import build_model, expert_init_seed

    return build_model(spec, expert_config(cfg), "single", expert_init_seed(cfg, k), sparse_embeddings)


def expert_members(cfg: ExperimentConfig, spec: FeatureSpec) -> list["Member"]:
    """One member per expert, each training on the history rows of its slice (task loss)."""
    from recdistill.distill.objective import Objective
    from recdistill.train.group import Member
    from recdistill.train.plan import expert_sample_seed

    e = expert_config(cfg)
    return [Member(name=f"{expert_name(k)}/raw", model=build_expert(cfg, spec, k), objective=Objective(alpha=0.0),
                   uses_teacher=False, ratio=1.0, negative_keep=1.0, seed=expert_sample_seed(cfg, k),
                   batch_size=e.batch_size, epochs=e.epochs, lr=e.lr, embedding_lr=e.embedding_lr,
                   eval_every=e.eval_every, patience=e.patience, part=k)
            for k in range(cfg.committee.experts)]


def committee_reads_representations(cfg: ExperimentConfig) -> bool:
    """Whether the committee's big teacher shows its states: its stored representations
    (``teacher.representations``: its user, item and history-item embeddings as of strictly
    before the row, with their staleness), joined to the stream like a LoopFM student's."""
    return bool(cfg.committee.experts and cfg.teacher.representations)


def teacher_states(rep: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The big teacher's states from a row's joined representations (``signals.representations``'
    layout): the user, item and history-mean values as three tokens (B, 3, dim), and the
    staleness group as its hidden vector (B, META)."""
    from recdistill.signals.representations import META

    return rep[:, :3 * dim].reshape(-1, 3, dim), rep[:, 4 * dim:4 * dim + META]


def committee_module(cfg: ExperimentConfig, student: Ranker, experts: list[Ranker]) -> QuestionAnswer:
    """The question-answer module of one committee member: teacher 0 is the big teacher
    (its stored logit, and its representations as states where it writes them), then each
    expert with its tokens and backbone output."""
    from recdistill.signals.representations import META

    big = TeacherStates(cfg.teacher.embed_dim, META) if committee_reads_representations(cfg) else TeacherStates()
    teachers = [big] + [TeacherStates(e.features.dim, e.backbone.out_dim) for e in experts]
    return QuestionAnswer(student.backbone.out_dim, teachers, cfg.committee.query_dim)


def configure_member(m: "Member", cfg: ExperimentConfig, i: int, experts: list[Ranker]) -> None:
    """Set a distilled member's teacher source from ``students.i.distill_from``."""
    source, k = committee_source(cfg.students[i].distill_from, cfg.committee.experts)
    m.source, m.expert = source, k
    if source in ("committee", "filtered"):
        with torch.random.fork_rng():  # its own initial weights, the global generator untouched
            torch.manual_seed(m.seed)
            m.qa = committee_module(cfg, m.model, experts)
        m.threshold = cfg.committee.threshold if source == "filtered" else 0.0
        m.align_weight = cfg.committee.align_weight


class Committee:
    """The frozen experts of a student worker, and the steps of the members that use them."""

    def __init__(self, experts: list[Ranker], device: torch.device) -> None:
        self.experts = experts
        for e in experts:
            e.to(device).eval()
            e.requires_grad_(False)

    @torch.no_grad()
    def _logits(self, rows: TensorLog, which: list[int]) -> torch.Tensor:
        return torch.stack([self.experts[k](rows.cat, rows.dense, rows.seq)[0] for k in which], 1)

    def step(self, m: "Member", rows: TensorLog, zt: torch.Tensor | None, label_mask: torch.Tensor | None) -> None:
        """One optimizer step of member ``m`` (rows, logits and mask on the device)."""
        n, k = len(rows), len(self.experts)
        big = zt if zt is not None else torch.full((n,), float("nan"), device=rows.label.device)
        if m.source == "expert":
            target = self._logits(rows, [m.expert])[:, 0]
            m.count(passes=n, possible=n, reads=0, reads_possible=0, signal=n)
        elif m.source == "average":
            z = torch.cat([big.unsqueeze(1), self._logits(rows, list(range(k)))], 1)
            target = z.nanmean(1)
            has = ~torch.isnan(big)
            m.count(passes=n * k, possible=n * k, reads=int(has.sum()), reads_possible=int(has.sum()), signal=n)
        else:
            self._committee_step(m, rows, big, label_mask)
            return
        train_step(m.model, m.opts, rows, objective=m.objective, teacher_logits=target, label_mask=label_mask)

    def _committee_step(self, m: "Member", rows: TensorLog, big: torch.Tensor, label_mask: torch.Tensor | None) -> None:
        model, qa = m.model, m.qa
        assert qa is not None
        n, k = len(rows), len(self.experts)
        h = model.backbone(model.features(rows.cat, rows.dense, rows.seq))
        main, aux = model.heads(h)
        present = torch.ones(n, k + 1, dtype=torch.bool, device=h.device)
        present[:, 0] = ~torch.isnan(big)
        weights, kept = importance_weights(qa.importance(h), present, m.threshold)
        logits = torch.full((n, k + 1), float("nan"), device=h.device)
        logits[:, 0] = big
        answers = []
        if qa.teachers[0].has_states:  # the big teacher's stored representations, where it was asked
            if rows.rep is None:
                raise ValueError(f"{m.name}: the committee's big teacher shows its representations, but the rows "
                                 f"were not joined with them (no teacher_rep column)")
            idx = kept[:, 0].nonzero().squeeze(1)
            if idx.numel():
                tokens, hidden = teacher_states(rows.rep[idx], qa.teachers[0].token_dim)
                answers.append((0, idx, qa.answer(0, h[idx], tokens, hidden)))
        for j, expert in enumerate(self.experts):
            idx = kept[:, j + 1].nonzero().squeeze(1)
            if not idx.numel():
                continue
            part = rows.take(idx)
            with torch.no_grad():
                tokens, hidden, z = expert.states(part.cat, part.dense, part.seq)
            logits[idx, j + 1] = z
            answers.append((j + 1, idx, qa.answer(j + 1, h[idx], tokens, hidden)))
        reads = int(kept[:, 0].sum())
        m.count(passes=int(kept[:, 1:].sum()), possible=n * k, reads=reads, reads_possible=int(present[:, 0].sum()),
                signal=n)
        target = combined_logit(weights.detach(), logits)
        labelled = label_mask if label_mask is not None else torch.ones(n, dtype=torch.bool, device=h.device)
        loss = (batch_loss(model, main, aux, rows, m.objective, target.detach(), label_mask)
                + m.align_weight * alignment_loss(h, weights, answers)
                + gate_loss(weights, logits, rows.label, labelled))
        optimizer_step(m.opts, loss)


PASSES = ("expert_passes", "expert_passes_possible", "signal_reads", "signal_reads_possible", "expert_passes_saved",
          "teacher_uses_saved")


def passes_summary(m: "Member") -> dict[str, Any]:
    """A member's teacher forward passes and stored-signal reads, run against possible."""
    def share(done: int, possible: int) -> float:
        return 1.0 - done / possible if possible else 0.0

    return {"expert_passes": m.passes, "expert_passes_possible": m.passes_possible,
            "signal_reads": m.reads, "signal_reads_possible": m.reads_possible,
            "expert_passes_saved": share(m.passes, m.passes_possible),
            "teacher_uses_saved": share(m.passes + m.reads, m.passes_possible + m.reads_possible)}
