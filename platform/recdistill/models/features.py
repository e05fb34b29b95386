"""Feature inputs shared by every model: field embeddings, pooled sequences, dense projection.

Batches are plain dicts of tensors (``Batch``); the model sees only encoded inputs:
``cat`` (B, F) int64 codes, ``seq`` (B, S, L) int64 codes (0 = padding), ``dense`` (B, D).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureSpec:
    """What the encoder needs to size its tables: buckets per field and which fields sequences share."""

    buckets: tuple[int, ...]  # per categorical field, codes in [0, buckets)
    num_dense: int
    sequence_fields: tuple[int, ...] = ()  # per sequence column, index of the field whose table it shares

    @property
    def num_tokens(self) -> int:
        return len(self.buckets) + len(self.sequence_fields) + (1 if self.num_dense else 0)


class FeatureEmbedding(nn.Module):
    """One embedding table with per-field offsets; sequences mean-pool their field's rows.

    Output: (B, tokens, dim) with one token per categorical field, one per sequence and one
    for the dense features (a linear projection of them), so every backbone can treat the
    input as a set of field tokens.
    """

    def __init__(self, spec: FeatureSpec, dim: int, sparse: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.dim = dim
        offsets = torch.tensor([0, *torch.tensor(spec.buckets).cumsum(0)[:-1].tolist()], dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        # sparse gradients: a batch touches a few thousand rows of a table of millions. Dense
        # ones for DDP over NCCL, which cannot all-reduce sparse tensors.
        self.table = nn.Embedding(int(sum(spec.buckets)), dim, sparse=sparse)
        nn.init.normal_(self.table.weight, std=0.01)
        self.dense = nn.Linear(spec.num_dense, dim) if spec.num_dense else None

    def forward(self, cat: torch.Tensor, dense: torch.Tensor | None = None,
                seq: torch.Tensor | None = None) -> torch.Tensor:
        tokens = [self.table(cat + self.offsets)]
        if self.spec.sequence_fields:
            assert seq is not None, "this model has sequence features: pass seq"
            for s, field in enumerate(self.spec.sequence_fields):
                ids = seq[:, s]
                mask = (ids > 0).unsqueeze(-1).to(tokens[0].dtype)
                rows = self.table(ids + self.offsets[field]) * mask
                pooled = rows.sum(1) / mask.sum(1).clamp(min=1.0)
                tokens.append(pooled.unsqueeze(1))
        if self.dense is not None:
            assert dense is not None, "this model has dense features: pass dense"
            tokens.append(self.dense(dense).unsqueeze(1))
        return torch.cat(tokens, dim=1)
