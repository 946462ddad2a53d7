"""FixTalk's module losses L_dis, L_d-mem and L_align as pure tensor functions.

The total FixTalk objective is L = L_rec + L_per + L_adv + L_dis + L_d-mem + L_align (weights not
published). The image losses live with the trainer; these three belong to EMI and EDI
(:mod:`fixtalk.nets.emi`, :mod:`fixtalk.nets.edi`). Every function returns a scalar (mean over the
batch) and keeps the input dtype/device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_D_MEM_KINDS = ("l1", "cos")


def _same_shape(name: str, a: torch.Tensor, b: torch.Tensor, ndim: int = 2) -> None:
    if a.dim() != ndim or a.shape != b.shape:
        raise ValueError(f"{name}: expected two tensors of the same {ndim}-D shape (B, D), got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def dis_loss(z_s: torch.Tensor, z_d: torch.Tensor, margin: float) -> torch.Tensor:
    """L_dis = mean_b max(0, cos(z^s_b, z^d_b) - xi), xi = ``margin`` (EMIConfig.margin).

    Used in self-driven training (source and driver share identity): pushing the EMI codes of the
    two frames below a cosine margin discourages z from carrying the shared identity."""
    _same_shape("dis_loss", z_s, z_d)
    cos = F.cosine_similarity(z_s, z_d, dim=1, eps=1e-8)
    return torch.relu(cos - margin).mean()


def d_mem_loss(token_d: torch.Tensor, token_d_read: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """L_d-mem between the driver token f^d_pi and its memory read alpha_d M_d.

    *Choice* (paper gives no formula): ``"l1"`` (default) = mean |f^d_pi - alpha_d M_d|, which
    also matches the magnitude of the token that Lambda decompresses; ``"cos"`` = mean(1 - cos).
    No stop-gradient: both the compressor Pi (through f^d_pi and the address) and M_d are trained;
    the image losses through Lambda keep Pi from collapsing to a constant token."""
    if kind not in _D_MEM_KINDS:
        raise ValueError(f"d_mem_loss kind must be one of {_D_MEM_KINDS}, got {kind!r}")
    _same_shape("d_mem_loss", token_d, token_d_read)
    if kind == "l1":
        return (token_d - token_d_read).abs().mean()
    return (1.0 - F.cosine_similarity(token_d, token_d_read, dim=1, eps=1e-8)).mean()


def align_loss(addr_ms: torch.Tensor, addr_d: torch.Tensor, detach_target: bool = True,
               eps: float = 1e-8) -> torch.Tensor:
    """L_align = KL(Omega_{m-s} || Omega_d) = mean_b sum_s a_ms log(a_ms / a_d).

    The direction is the one written in the paper notes. *Choice*: with ``detach_target`` (default,
    EDIConfig.align_detach_target) the driver address Omega_d is a fixed target, so L_align trains
    only the motion-source side (M_{m-s} and what produces its query), not M_d or the driver
    compressor path. Probabilities are clamped to ``eps`` before the logs, so zeros give a finite
    loss and finite gradients. Inputs are address distributions (B, S) (rows summing to 1)."""
    _same_shape("align_loss", addr_ms, addr_d)
    target = addr_d.detach() if detach_target else addr_d
    log_ms = addr_ms.clamp_min(eps).log()
    log_d = target.clamp_min(eps).log()
    return (addr_ms * (log_ms - log_d)).sum(dim=1).mean()
