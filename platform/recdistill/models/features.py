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
    num_dense: int  # the log's dense features
    sequence_fields: tuple[int, ...] = ()  # per sequence column, index of the field whose table it shares
    # input groups after the log's dense features in the dense input, each projected to a
    # token of its own: a student's teacher representations (``signals.representations``)
    extra_dense: tuple[int, ...] = ()
    # TokenMinds' prefix tokens: the last entities × levels categorical fields are semantic
    # IDs (code + 1, 0 = none), (entities, levels, codes); each level's field becomes the
    # tuple of the codes up to it (``prefix_tokens``). () = the fields are read as they are
    code_prefix: tuple[int, ...] = ()

    @property
    def num_tokens(self) -> int:
        return len(self.buckets) + len(self.sequence_fields) + (1 if self.num_dense else 0) + len(self.extra_dense)

    @property
    def dense_width(self) -> int:
        """Columns of the model's dense input: the log's dense features, then the extra groups."""
        return self.num_dense + sum(self.extra_dense)


# The most buckets a prefix token gets: a prime, so that a prefix of more tuples than this is
# a polynomial hash of its codes (``prefix_tokens``). 65,537 rows of a student's table per
# level and entity: at K = 64 codes, levels 1 and 2 are exact (65 and 4,225 tuples), level 3
# (274,625 tuples) shares buckets.
PREFIX_BUCKETS = 65_537


def prefix_buckets(levels: int, codes: int) -> tuple[int, ...]:
    """Buckets of each level's prefix token: every tuple of codes (and 0 = none) up to that
    level, at most ``PREFIX_BUCKETS``."""
    return tuple(min((codes + 1) ** (level + 1), PREFIX_BUCKETS) for level in range(levels))


def prefix_tokens(ids: torch.Tensor, entities: int, levels: int, codes: int) -> torch.Tensor:
    """(B, entities × levels) semantic IDs (code + 1, 0 = none yet) → each level's prefix:
    the mixed-radix index of the codes up to it, exact while it fits in ``PREFIX_BUCKETS``,
    then hashed modulo that prime. An entity with no ID yet keeps 0 at every level."""
    out = []
    for e in range(entities):
        p = torch.zeros_like(ids[:, 0])
        exact = 1
        for level in range(levels):
            exact *= codes + 1
            p = p * (codes + 1) + ids[:, e * levels + level]
            if exact > PREFIX_BUCKETS:
                p = torch.remainder(p, PREFIX_BUCKETS)
            out.append(p)
    return torch.stack(out, dim=1)


class FeatureEmbedding(nn.Module):
    """One embedding table with per-field offsets; sequences mean-pool their field's rows.

    Output: (B, tokens, dim) with one token per categorical field, one per sequence, one
    for the dense features (a linear projection of them) and one per extra dense group, so
    every backbone can treat the input as a set of field tokens.
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
        self.extra = nn.ModuleList(nn.Linear(n, dim) for n in spec.extra_dense)

    def forward(self, cat: torch.Tensor, dense: torch.Tensor | None = None,
                seq: torch.Tensor | None = None) -> torch.Tensor:
        if self.spec.code_prefix:
            entities, levels, codes = self.spec.code_prefix
            n = entities * levels
            cat = torch.cat([cat[:, :-n], prefix_tokens(cat[:, -n:], entities, levels, codes)], dim=1)
        tokens = [self.table(cat + self.offsets)]
        if self.spec.sequence_fields:
            assert seq is not None, "this model has sequence features: pass seq"
            for s, field in enumerate(self.spec.sequence_fields):
                ids = seq[:, s]
                mask = (ids > 0).unsqueeze(-1).to(tokens[0].dtype)
                rows = self.table(ids + self.offsets[field]) * mask
                pooled = rows.sum(1) / mask.sum(1).clamp(min=1.0)
                tokens.append(pooled.unsqueeze(1))
        if self.dense is not None or self.spec.extra_dense:
            assert dense is not None, "this model has dense features: pass dense"
            parts = torch.split(dense, [self.spec.num_dense, *self.spec.extra_dense], dim=1)
            if self.dense is not None:
                tokens.append(self.dense(parts[0]).unsqueeze(1))
            tokens += [proj(x).unsqueeze(1) for proj, x in zip(self.extra, parts[1:])]
        return torch.cat(tokens, dim=1)
