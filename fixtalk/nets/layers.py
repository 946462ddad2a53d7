"""StyleGAN2-style building blocks in pure PyTorch (no custom CUDA ops).

These are the layers LIA and EDTalk are made of. Parameter and buffer names and shapes follow the
reference exactly so that EDTalk's checkpoints load strictly:

* equalized learning rate: the stored weight is N(0, 1) and is multiplied by ``1/sqrt(fan_in)`` at
  run time (``EqualLinear``, ``EqualConv2d``, ``ModulatedConv2d``);
* ``FusedLeakyReLU`` keeps a learned bias of shape ``(1, C, 1, 1)`` (not ``(C,)``), added before
  ``leaky_relu(0.2) * sqrt(2)``;
* ``Blur``/``Upsample`` hold their FIR as a ``kernel`` buffer (outer product of ``[1, 3, 3, 1]``
  normalised to sum 1; ``x factor**2`` when upsampling).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """2-D FIR from a 1-D one (outer product), normalised to sum 1."""
    t = torch.tensor(list(k), dtype=torch.float32)
    if t.ndim == 1:
        t = t[None, :] * t[:, None]
    return t / t.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), filter with the flipped FIR, downsample.

    Same arithmetic as StyleGAN2's native ``upfirdn2d`` with equal x/y factors and pads.
    """
    b, c, h, w = x.shape
    out = x
    if up > 1:
        out = out.reshape(b, c, h, 1, w, 1)
        out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
        out = out.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = out.shape[-2:]
        out = out[:, :, max(-p0, 0): hh - max(-p1, 0), max(-p0, 0): ww - max(-p1, 0)]
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).reshape(1, 1, kh, kw).to(dtype=out.dtype)
    out = F.conv2d(out, weight.expand(c, 1, kh, kw), groups=c)  # depthwise: fast fwd and bwd
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out


class Blur(nn.Module):
    """FIR low-pass with explicit padding (``upsample_factor`` scales the kernel by factor**2)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 zero-insertion upsampling + blur (pads (2, 1) for the 4-tap kernel)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * (factor ** 2))
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class FusedLeakyReLU(nn.Module):
    """``leaky_relu(x + b, 0.2) * sqrt(2)`` with a bias of shape (1, C, 1, 1)."""

    def __init__(self, channels: int, negative_slope: float = 0.2, scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias, self.negative_slope) * self.scale


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: ``y = x (W/sqrt(in))^T + b`` (no activation)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = 1.0 / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate (weight N(0,1) x 1/sqrt(in*k*k))."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride,
                        padding=self.padding)


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU]; ``downsample`` blurs then convolves at stride 2.

    With an activation the conv has no bias of its own (the activation's bias is the bias).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True,
                 activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv: ``w' = s * W / sqrt(fan_in)``, optionally demodulated
    (``w'' = w' / sqrt(sum w'^2 + 1e-8)``), as one grouped conv over the batch.

    ``upsample`` = transposed conv at stride 2 followed by Blur(pad (1,1), kernel x4).
    ``modulation`` maps the style (``style_dim``) to one scale per input channel (bias init 1).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             upsample_factor=factor)
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Computed as ``demod * conv(x * s, W / sqrt(fan_in))`` (one shared-weight conv for the
        whole batch), which equals the grouped per-sample conv of the reference up to float32
        rounding and is several times faster on CPU, forward and backward."""
        b, c, h, w = x.shape
        s = self.modulation(style)  # (B, in)
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        x = x * s.view(b, c, 1, 1)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            wsq = weight.pow(2).sum([2, 3])  # (out, in)
            demod = torch.rsqrt(s.pow(2) @ wsq.t() + 1e-8)  # (B, out)
            out = out * demod.view(b, self.out_ch, 1, 1)
        return self.blur(out) if self.upsample else out


class NoiseInjection(nn.Module):
    """Learned noise strength. EDTalk never passes noise, so without ``noise`` this is the identity
    (the weight is kept only so checkpoints load)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return x if noise is None else x + self.weight * noise


class StyledConv(nn.Module):
    """ModulatedConv2d (demodulated) -> NoiseInjection -> FusedLeakyReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, demodulate=True,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style)))


class ConstantInput(nn.Module):
    """Learned (1, C, 4, 4) input repeated over the batch."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)
