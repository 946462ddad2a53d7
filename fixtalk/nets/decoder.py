"""Decoder G (LIA's ``Synthesis`` + EDTalk's EEM), key prefix ``dec``.

The target latent w = f^s_6 + Q alpha is repeated over ``n_latent = 2 log2(S) - 2`` style slots.
From a learned 4x4 constant, each level r = 8, 16, ..., S (index k, slot i = 1 + 2k):

1. ``convs[2k]`` (StyledConv, x2 upsample, slot i), ``convs[2k+1]`` (StyledConv, slot i+1);
2. EEM modulates the source map f_k by the expression latent e (skipped without EEM / e);
3. ``to_flows[k]``: logits c = ModConv1x1(out, slot i+2, no demod) + bias (+ upsampled logits of the
   previous level); flow = tanh(c[:, :2]) + identity grid, mask = sigmoid(c[:, 2:]);
   warped = grid_sample(f_k, flow) * mask (bilinear, zeros, align_corners=False);
   the decoder feature continues as ``warped + out * (1 - mask)``;
4. ``to_rgbs[k]`` on the *warped* map (1x1 conv + FusedLeakyReLU + bias) + upsampled previous RGB.

The RGB accumulated at S x S is the image (no tanh). ``to_rgb1`` exists only so checkpoints load.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .eem import EEM
from .fused import flow_logits, styled_conv
from .layers import ConstantInput, ConvLayer, ModulatedConv2d, StyledConv, Upsample

_GRID_CACHE: dict[tuple, torch.Tensor] = {}


def identity_grid(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, size, size, 2) grid from float64 linspace(-1, 1) cast to ``dtype``; [..., 0] = x (width)."""
    key = (size, str(device), dtype)
    grid = _GRID_CACHE.get(key)
    if grid is None:
        xs = np.linspace(-1, 1, size)
        gx, gy = np.meshgrid(xs, xs)
        grid = torch.from_numpy(np.stack([gx, gy], 2)).to(dtype=torch.float32)
        grid = grid.to(device=device, dtype=dtype).unsqueeze(0)
        if len(_GRID_CACHE) > 64:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = grid
    return grid


class ToRGB(nn.Module):
    """1x1 ConvLayer (with FusedLeakyReLU) + extra bias + upsampled skip."""

    def __init__(self, in_ch: int, upsample: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ConvLayer(in_ch, 3, 1, blur_kernel=blur_kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ToFlow(nn.Module):
    """Flow + mask logits from the decoder feature; warps the source map."""

    def __init__(self, in_ch: int, style_dim: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)

    def forward(self, x: torch.Tensor, style: torch.Tensor, feat: torch.Tensor,
                skip: torch.Tensor | None = None, offset: torch.Tensor | None = None,
                still: bool = False, fused: bool = False):
        """Returns (warped source map, next decoder feature, flow logits). ``offset`` (1|B, h, w, 2)
        is subtracted from the flow displacement; ``still`` warps with the identity grid (the
        logits are returned unchanged in both cases). ``fused``: inference with fewer passes
        (:mod:`fixtalk.nets.fused`), used without gradients only."""
        fused = fused and not torch.is_grad_enabled()
        logits = flow_logits(self.conv, self.bias, x, style) if fused else self.conv(x, style) + self.bias
        if skip is not None:
            logits = logits + self.upsample(skip)
        b, _, h, w = x.shape
        disp = torch.tanh(logits[:, 0:2]).permute(0, 2, 3, 1)
        if still:
            disp = torch.zeros_like(disp)
        elif offset is not None:
            disp = disp - offset.to(disp.dtype)
        flow = disp + identity_grid(h, x.device, x.dtype)
        mask = torch.sigmoid(logits[:, 2:3])
        warped = F.grid_sample(feat, flow, mode="bilinear", padding_mode="zeros",
                               align_corners=False) * mask
        nxt = torch.addcmul(warped, x, 1 - mask) if fused else warped + x * (1 - mask)
        return warped, nxt, logits


@dataclass
class DecoderLevels:
    """Per-level intermediates (coarse to fine) for debugging and parity."""

    eem_out: list[torch.Tensor] = field(default_factory=list)
    flow_logits: list[torch.Tensor] = field(default_factory=list)
    rgb: list[torch.Tensor] = field(default_factory=list)
    flow_offsets: list[torch.Tensor | None] = field(default_factory=list)  # subtracted from each flow


class Synthesis(nn.Module):
    """The flow-warping generator. ``with_eem`` adds ``fineadainresblock`` (EDTalk) or not (LIA /
    EDTalk lip-pose)."""

    def __init__(self, size: int, style_dim: int, channels: dict[int, int], with_eem: bool,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), adain_hidden: int = 128):
        super().__init__()
        log_size = int(math.log2(size))
        self.size = size
        self.n_latent = log_size * 2 - 2
        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(channels[4], upsample=False, blur_kernel=blur_kernel)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.to_flows = nn.ModuleList()
        in_ch = channels[4]
        self.levels = [2 ** i for i in range(3, log_size + 1)]
        for r in self.levels:
            out_ch = channels[r]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, blur_kernel=blur_kernel))
            self.to_flows.append(ToFlow(out_ch, style_dim, blur_kernel=blur_kernel))
            in_ch = out_ch
        self.with_eem = with_eem
        if with_eem:
            self.fineadainresblock = nn.ModuleList(
                [EEM(channels[r], style_dim, adain_hidden) for r in self.levels])

    def set_reference_cost(self, enabled: bool) -> None:
        """Compute EEM's dead conv1/norm1 branch (reference-style cost) or skip it (default)."""
        if self.with_eem:
            for m in self.fineadainresblock:
                m.compute_dead_branch = enabled

    def forward(self, latent: torch.Tensor, feats: list[torch.Tensor],
                exp_latent: torch.Tensor | None = None, levels: DecoderLevels | None = None,
                premodulated: frozenset[int] = frozenset(),
                flow_offsets: Sequence[torch.Tensor] | None = None, still: bool = False,
                fused: bool = False) -> torch.Tensor:
        """latent (B, D) target latent; feats: source maps coarse to fine (8..S); exp_latent (B, D)
        EEM condition or None. ``premodulated``: level indices whose maps already went through
        EEM (the fast renderer runs EEM once for a constant expression). ``flow_offsets``: one
        (1|B, r, r, 2) displacement per level subtracted from the flow (None: EDTalk's decoder
        exactly); ``still``: every level warps with the identity grid (the self pass of relative
        flow). ``fused``: the inference forwards of :mod:`fixtalk.nets.fused` (same numbers up to
        float32 rounding; ignored while gradients are enabled). Fills ``levels`` with
        intermediates when given."""
        if flow_offsets is not None and len(flow_offsets) != len(self.levels):
            raise ValueError(f"flow_offsets: expected {len(self.levels)} levels, got {len(flow_offsets)}")
        if len(feats) != len(self.levels):
            raise ValueError(f"decoder expects {len(self.levels)} source maps "
                             f"({self.levels}), got {len(feats)}")
        b = latent.shape[0]
        style = latent  # every style slot holds the same latent
        conv = styled_conv if fused else (lambda layer, x, s: layer(x, s))
        out = conv(self.conv1, self.input(b), style)
        skip_rgb = skip_flow = None
        for k, feat in enumerate(feats):
            out = conv(self.convs[2 * k], out, style)
            out = conv(self.convs[2 * k + 1], out, style)
            if self.with_eem and k not in premodulated:
                feat = self.fineadainresblock[k](feat, exp_latent)
            offset = None if flow_offsets is None else flow_offsets[k]
            warped, out, skip_flow = self.to_flows[k](out, style, feat, skip_flow, offset, still, fused)
            skip_rgb = self.to_rgbs[k](warped, skip_rgb)
            if levels is not None:
                levels.eem_out.append(feat)
                levels.flow_logits.append(skip_flow)
                levels.rgb.append(skip_rgb)
                levels.flow_offsets.append(offset)
        return skip_rgb


def self_flow_offsets(levels: DecoderLevels, detach: bool = True) -> list[torch.Tensor]:
    """Per-level flow displacements tanh(c[:, :2]) (B, r, r, 2) of a decoder pass (detached unless
    ``detach`` is False: training with relative flow learns f_d - f_s end to end).

    Relative flow (this project's choice, not in LIA/EDTalk/FixTalk): decode the source with its
    *own* bank weights alpha_s and ``still=True``; a perfect G would ask for the identity warp,
    but a model trained on few faces warps an unseen face toward the geometry it learnt (identity
    leakage of the training faces into the flow). Subtracting these self-flows level by level
    from every driven flow keeps the motion (f_d - f_s) and drops the bias (first order in the
    flow, which stays a few pixels). Because the self pass warps with the identity at every level,
    rendering the source with its own weights reproduces that pass exactly: zero flow, the copy."""
    return [torch.tanh(c[:, 0:2].detach() if detach else c[:, 0:2]).permute(0, 2, 3, 1)
            for c in levels.flow_logits]
