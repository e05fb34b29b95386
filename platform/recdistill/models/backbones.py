"""Backbones: field tokens (B, T, d) → a hidden vector (B, out_dim). Plain PyTorch.

Each has configurable depth and width; heads (towers) live in ``models.ranker``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, width: int, depth: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d = width
    return nn.Sequential(*layers)


class DNN(nn.Module):
    """Concatenated field tokens → MLP."""

    def __init__(self, tokens: int, dim: int, depth: int, width: int) -> None:
        super().__init__()
        self.net = mlp(tokens * dim, width, depth)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class DeepFM(nn.Module):
    """FM second-order interaction vector alongside an MLP (Guo et al., 2017)."""

    def __init__(self, tokens: int, dim: int, depth: int, width: int) -> None:
        super().__init__()
        self.deep = mlp(tokens * dim, width, depth)
        self.out_dim = width + dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 0.5·((Σv)² − Σv²): all pairwise inner products, kept per dimension
        fm = 0.5 * (x.sum(1).pow(2) - x.pow(2).sum(1))
        return torch.cat([self.deep(x.flatten(1)), fm], dim=1)


class CrossLayerV2(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.lin(x) + x


class DCNv2(nn.Module):
    """Cross network v2 (full-rank, ``depth`` layers) in parallel with an MLP (Wang et al., 2021)."""

    def __init__(self, tokens: int, dim: int, depth: int, width: int) -> None:
        super().__init__()
        d = tokens * dim
        self.cross = nn.ModuleList(CrossLayerV2(d) for _ in range(depth))
        self.deep = mlp(d, width, depth)
        self.out_dim = d + width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x.flatten(1)
        c = x0
        for layer in self.cross:
            c = layer(x0, c)
        return torch.cat([c, self.deep(x0)], dim=1)


class MixerBlock(nn.Module):
    """Token mixing (an MLP across tokens, per channel) then a per-token feed-forward."""

    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        # Mixing weights applied with einsum: a Linear over a transposed (non-contiguous)
        # activation ran ~10x slower on CPU.
        self.mix_w1 = nn.Parameter(torch.randn(tokens, 2 * tokens) / tokens ** 0.5)
        self.mix_b1 = nn.Parameter(torch.zeros(2 * tokens, 1))
        self.mix_w2 = nn.Parameter(torch.randn(2 * tokens, tokens) / (2 * tokens) ** 0.5)
        self.mix_b2 = nn.Parameter(torch.zeros(tokens, 1))
        self.norm2 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, width * 2), nn.GELU(), nn.Linear(width * 2, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        u = F.gelu(torch.einsum("btd,tk->bkd", self.norm1(h), self.mix_w1) + self.mix_b1)
        h = h + torch.einsum("bkd,kt->btd", u, self.mix_w2) + self.mix_b2
        return h + self.ffn(self.norm2(h))


class TokenMixer(nn.Module):
    """Field embeddings as tokens; stacked token-mixing + per-token feed-forward blocks.

    In the spirit of RankMixer/TokenMixer: capacity grows with ``width`` (per-token
    hidden size) and ``depth`` (blocks), to tens of millions of parameters on a GPU.
    """

    def __init__(self, tokens: int, dim: int, depth: int, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(MixerBlock(tokens, width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out_dim = width * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return torch.cat([h.mean(1), h.max(1).values], dim=1)


BACKBONES = {"dnn": DNN, "deepfm": DeepFM, "dcnv2": DCNv2, "tokenmixer": TokenMixer}
