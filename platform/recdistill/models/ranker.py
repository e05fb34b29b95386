"""Rankers: features → backbone → towers. They return logits; losses live in ``distill``.

A ``Ranker`` has one tower (the teacher, or the single-tower student ablation) or two
(Rec-Distill's decoupled student): a main tower, trained on the task loss only, which is
the one that serves, and an auxiliary tower that also takes the distillation loss. Both
read the same backbone, so distillation reaches the serving head only through shared
representations.
"""

from __future__ import annotations

import torch
from torch import nn

from recdistill.models.backbones import BACKBONES
from recdistill.models.features import FeatureEmbedding, FeatureSpec


def _tower(in_dim: int, hidden: int) -> nn.Module:
    """A linear head, or with ``hidden`` > 0 a one-hidden-layer MLP of its own."""
    if hidden <= 0:
        return nn.Linear(in_dim, 1)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class Ranker(nn.Module):
    def __init__(self, spec: FeatureSpec, arch: str, embed_dim: int, depth: int, width: int,
                 towers: str = "single", tower_width: int = 0, sparse_embeddings: bool = True) -> None:
        super().__init__()
        if arch not in BACKBONES:
            raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(BACKBONES)}")
        if towers not in ("single", "decoupled"):
            raise ValueError(f"towers={towers!r}: expected 'single' or 'decoupled'")
        self.features = FeatureEmbedding(spec, embed_dim, sparse=sparse_embeddings)
        self.backbone = BACKBONES[arch](spec.num_tokens, embed_dim, depth, width)
        self.main = _tower(self.backbone.out_dim, tower_width)
        self.aux = _tower(self.backbone.out_dim, tower_width) if towers == "decoupled" else None
        # which slices of a joined stream's teacher representations follow this model's dense
        # features (``TensorLog.with_representations``); set by the plan for students that read them
        self.rep_columns: tuple[tuple[int, int], ...] = ()
        self.code_columns: tuple[tuple[int, int], ...] = ()  # likewise, of its semantic IDs (categorical)

    @property
    def decoupled(self) -> bool:
        return self.aux is not None

    def forward(self, cat: torch.Tensor, dense: torch.Tensor | None = None,
                seq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(main logit, aux logit), each (B,); single tower: the aux logit is the main one."""
        return self.heads(self.backbone(self.features(cat, dense, seq)))

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(main logit, aux logit) of a backbone output ``h``."""
        main = self.main(h).squeeze(-1)
        aux = self.aux(h).squeeze(-1) if self.aux is not None else main
        return main, aux

    def states(self, cat: torch.Tensor, dense: torch.Tensor | None = None,
               seq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(field tokens (B, T, d), backbone output (B, out_dim), main logit): what a frozen
        committee teacher shows of itself (``distill.committee``)."""
        tokens = self.features(cat, dense, seq)
        h = self.backbone(tokens)
        return tokens, h, self.main(h).squeeze(-1)

    def num_params(self, dense_only: bool = False) -> int:
        params = [p for n, p in self.named_parameters() if not (dense_only and n.startswith("features.table"))]
        return sum(p.numel() for p in params)

    def embedding_params(self) -> list[nn.Parameter]:
        return [self.features.table.weight]

    def dense_params(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("features.table")]
