"""Encoder E (LIA's ``EncoderApp``, unchanged in EDTalk and FixTalk).

E maps an image I (B, 3, S, S) in [-1, 1] to the code f_6 = ``wa`` (B, style_dim) and the feature
pyramid f_1..f_5 (coarse to fine: 8x8, 16x16, ..., SxS). Layout (key prefix ``enc.net_app``):

* ``convs.0``: 1x1 ConvLayer 3 -> C[S] (FusedLeakyReLU);
* ``convs.1..``: ResBlocks halving the resolution down to 4x4, each
  ``(conv2(conv1(x)) + skip(x)) / sqrt(2)`` with blur-then-stride-2 downsampling;
* last: EqualConv2d C[4] -> style_dim, 4x4, no padding, no bias, no activation.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .layers import ConvLayer, EqualConv2d


class ResBlock(nn.Module):
    """Downsampling residual block: conv3x3 -> blur + conv3x3/2, skip blur + conv1x1/2."""

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel,
                              activate=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class EncoderApp(nn.Module):
    """The appearance encoder. ``forward`` returns ``(code (B, D), feats)``, feats coarse to fine."""

    def __init__(self, size: int, style_dim: int, channels: dict[int, int],
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        log_size = int(math.log2(size))
        if 2 ** log_size != size or size < 8:
            raise ValueError(f"encoder size must be a power of two >= 8, got {size}")
        missing = [2 ** i for i in range(2, log_size + 1) if 2 ** i not in channels]
        if missing:
            raise ValueError(f"channel table lacks resolutions {missing} (needs 4..{size})")
        self.size = size
        convs: list[nn.Module] = [ConvLayer(3, channels[size], 1, blur_kernel=blur_kernel)]
        in_ch = channels[size]
        for i in range(log_size, 2, -1):
            out_ch = channels[2 ** (i - 1)]
            convs.append(ResBlock(in_ch, out_ch, blur_kernel))
            in_ch = out_ch
        convs.append(EqualConv2d(in_ch, style_dim, 4, padding=0, bias=False))
        self.convs = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor, return_res4: bool = False):
        res = []
        h = x
        for conv in self.convs:
            h = conv(h)
            res.append(h)
        code = res[-1].squeeze(-1).squeeze(-1)
        feats = res[::-1][2:]
        if return_res4:
            return code, feats, res[-2]
        return code, feats


class Encoder(nn.Module):
    """Wrapper holding ``net_app`` (keeps EDTalk's ``enc.net_app.*`` key names)."""

    def __init__(self, size: int, style_dim: int, channels: dict[int, int],
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.net_app = EncoderApp(size, style_dim, channels, blur_kernel)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.net_app(x)
