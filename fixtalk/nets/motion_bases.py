"""Motion bases (EDTalk's FDM): shared fc, the lip/pose/expression heads and the direction banks.

* ``fc``: 4 x EqualLinear(D, D), **no activations** (LIA's ``enc.fc.0-3``);
* heads ``lip_fc``/``pose_fc``/``exp_fc``: EqualLinear D->D->D->n, no activations, so each weight
  vector alpha_c = head_c(fc(f_6)) is an affine function of the code;
* banks ``direction_lipnonlip`` (D x 26 = [lip 0-19 | pose 20-25]) and ``direction_exp`` (D x 10)
  are orthonormalised **together**: Q = QR([W_lp | W_e] + 1e-8) (reduced Householder QR, LAPACK
  signs, as ``torch.linalg.qr``). Because QR is Gram-Schmidt ordered, Q[:, :26] is the QR of W_lp
  alone, so lip/pose bases do not depend on the expression bank.
* the motion latent is d = Q alpha; its partial sums Q[:, :20] alpha_lip, Q[:, 20:26] alpha_pose
  and Q[:, 26:] alpha_exp are the per-component latents (the last one is EEM's condition e).

``BasisCache`` keeps Q while the bank weights are unchanged and no gradient is needed (eval).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import EqualLinear


class Direction(nn.Module):
    """One direction bank: ``weight`` (D, n), N(0, 1) init."""

    def __init__(self, style_dim: int, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(style_dim, n))


def linear_stack(dims: list[int]) -> nn.Sequential:
    """EqualLinear layers dims[0] -> dims[1] -> ... with no activations (keys ``0``, ``1``, ...)."""
    return nn.Sequential(*[EqualLinear(a, b) for a, b in zip(dims[:-1], dims[1:])])


def shared_fc(style_dim: int) -> nn.Sequential:
    """The shared 4-layer linear MLP applied to the code before every head."""
    return linear_stack([style_dim] * 5)


def head(style_dim: int, out_dim: int) -> nn.Sequential:
    """A 3-layer linear head D -> D -> D -> out_dim (MLN / PLN / ELN)."""
    return linear_stack([style_dim, style_dim, style_dim, out_dim])


def orthonormal_basis(w_lipnonlip: torch.Tensor, w_exp: torch.Tensor | None = None) -> torch.Tensor:
    """Q (D, K) = reduced QR of ``[W_lp | W_e] + 1e-8``; K = 26 (+10 with the expression bank)."""
    w = w_lipnonlip if w_exp is None else torch.cat([w_lipnonlip, w_exp], dim=-1)
    q, _ = torch.linalg.qr(w + 1e-8, mode="reduced")
    return q


def combine(alpha: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Sum of weighted directions: ``sum_j alpha[:, j] * Q[:, j]`` -> (B, D)."""
    return (alpha.unsqueeze(-1) * q.t().unsqueeze(0)).sum(dim=1)


class BasisCache:
    """Caches Q for fixed bank weights. Recomputed when a weight changes (its version counter or
    storage moves) or when autograd must see the QR (grad enabled and weights trainable)."""

    def __init__(self):
        self._key: tuple | None = None
        self._q: torch.Tensor | None = None

    @staticmethod
    def _signature(weights: list[torch.Tensor]) -> tuple:
        return tuple((w.data_ptr(), w._version, w.dtype, w.device, tuple(w.shape)) for w in weights)

    def get(self, w_lp: torch.Tensor, w_exp: torch.Tensor | None, use_cache: bool) -> torch.Tensor:
        weights = [w_lp] + ([w_exp] if w_exp is not None else [])
        needs_grad = torch.is_grad_enabled() and any(w.requires_grad for w in weights)
        if not use_cache or needs_grad:
            return orthonormal_basis(w_lp, w_exp)
        key = self._signature(weights)
        if key != self._key or self._q is None:
            with torch.no_grad():
                self._q = orthonormal_basis(w_lp, w_exp)
            self._key = key
        return self._q

    def clear(self) -> None:
        self._key, self._q = None, None
