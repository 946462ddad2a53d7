"""A small StyleGAN2-style residual discriminator (LIA/EDTalk use the full-size one).

1x1 stem, residual blocks (3x3 conv, 3x3 conv + 2x down; 1x1 skip + 2x down; sum / sqrt 2) down to
4x4, minibatch standard deviation (group up to 4), 3x3 conv, linear -> linear -> 1 logit.
Downsampling is a [1,2,1] binomial blur with stride 2 (anti-aliased as in StyleGAN2). Convolutions
and linears use StyleGAN2's equalised learning rate (N(0, 1) weights scaled by 1/sqrt(fan-in) at
run time), LeakyReLU(0.2). With plain layers (weights ~0.02) an Adam step of the usual 2e-3 moved
every weight by ~10 % per step; the logits then grew geometrically with depth and ran away to
~1e5 a few hundred steps after the GAN term started (seen twice on the synthetic set).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fixtalk.nets.layers import EqualConv2d, EqualLinear


def _blur_down(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    k2 = (k[:, None] * k[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, stride=2, groups=x.shape[1])


class DResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = EqualConv2d(cin, cin, 3, padding=1)
        self.conv2 = EqualConv2d(cin, cout, 3, padding=1)
        self.skip = EqualConv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.leaky_relu(_blur_down(self.conv2(y)), 0.2)
        return (y + _blur_down(self.skip(x))) / math.sqrt(2)


class Discriminator(nn.Module):
    """Image (B, 3, S, S) in [-1, 1] -> real/fake logit (B, 1)."""

    def __init__(self, size: int, base: int = 32, max_channels: int = 128, stddev_group: int = 4):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"discriminator size must be a power of two >= 8, got {size}")
        ch = lambda r: min(max_channels, base * (size // r))  # noqa: E731
        self.stem = EqualConv2d(3, ch(size), 1)
        blocks, r = [], size
        while r > 4:
            blocks.append(DResBlock(ch(r), ch(r // 2)))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = ch(4)
        self.stddev_group = stddev_group
        self.final_conv = EqualConv2d(c4 + 1, c4, 3, padding=1)
        self.fc1 = EqualLinear(c4 * 16, c4)
        self.fc2 = EqualLinear(c4, 1)

    def _minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(b, self.stddev_group)
        while b % g:
            g -= 1
        y = x.view(g, -1, c, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean([1, 2, 3])  # (b/g,)
        y = y.view(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.stem(img), 0.2)
        x = self.blocks(x)
        x = F.leaky_relu(self.final_conv(self._minibatch_stddev(x)), 0.2)
        x = F.leaky_relu(self.fc1(x.flatten(1)), 0.2)
        return self.fc2(x)
