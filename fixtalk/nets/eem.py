"""EEM, EDTalk's expression enhancement module (key prefix ``dec.fineadainresblock.{k}``).

Per decoder level, the source feature f_k is modulated by the expression latent e = Q_e alpha_exp
through AdaIN: ``ADAIN(x, e) = IN(x) * (1 + gamma(e)) + beta(e)`` with
``gamma, beta = Linear(ReLU(Linear(e)))`` (hidden width ``adain_hidden``).

The reference computes ``act(norm1(conv1(x), e))`` and then overwrites it, returning
``x + norm2(conv2(x), e)``. We reproduce the output exactly, keep ``conv1``/``norm1`` so
checkpoints load strictly, and skip their compute unless ``compute_dead_branch`` is set (only used
by the reference-style benchmark path, to cost what the reference costs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ADAIN(nn.Module):
    """Instance norm (no affine) modulated by gamma/beta predicted from a condition vector."""

    def __init__(self, channels: int, cond_dim: int, hidden: int = 128):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU())
        self.mlp_gamma = nn.Linear(hidden, channels)
        self.mlp_beta = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        actv = self.mlp_shared(cond.reshape(cond.shape[0], -1))
        gamma = self.mlp_gamma(actv)[:, :, None, None]
        beta = self.mlp_beta(actv)[:, :, None, None]
        return normalized * (1 + gamma) + beta


class EEM(nn.Module):
    """Expression-conditioned residual block: ``x + ADAIN2(conv2(x), e)``; identity if e is None."""

    def __init__(self, channels: int, cond_dim: int, hidden: int = 128):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm1 = ADAIN(channels, cond_dim, hidden)
        self.norm2 = ADAIN(channels, cond_dim, hidden)
        self.compute_dead_branch = False

    def forward(self, x: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        if e is None:
            return x
        if self.compute_dead_branch:  # reference cost only; the value is discarded, as upstream
            F.leaky_relu(self.norm1(self.conv1(x), e), 0.2)
        return x + self.norm2(self.conv2(x), e)
