"""Inference-only forwards of the decoder's styled layers with fewer passes over the activations.

The fast clip renderer (:meth:`fixtalk.inference.ClipRenderer.render_float`) decodes through
these; training and the per-frame reference-style path use the modules' own ``forward``. Same
arithmetic up to float32 rounding (each rewrite below is an exact identity in real numbers):

* **Weights derived once.** ``W / sqrt(fan_in)``, its squared sums for demodulation, the
  transposed copy a transposed convolution wants and the scaled style projections are cached
  per layer (keyed on the parameters' version counters, so an in-place load or optimiser step
  rebuilds them) instead of being recomputed on every call.
* **Style folded into the weight.** A StyledConv is ``leaky(demod * conv(x * s, W) + b) * sqrt2``.
  With ``leaky(c z) = c leaky(z)`` for c > 0, that is ``leaky(conv(x, W') + b')`` with
  ``W' = W * s[in] * demod[out] * sqrt2`` and ``b' = b * sqrt2``: one convolution with a bias and
  one in-place activation, instead of five elementwise passes (``x * s``, ``* demod``, ``+ b``,
  ``leaky``, ``* sqrt2``). Folding is per sample, so it is used at batch 1 when the weight is
  smaller than the activation (the fine, wide levels); otherwise the input is scaled and the
  output demodulated and biased in one ``addcmul``.
* **Transposed convolution + blur.** The x2 upsampling conv's blur (a depthwise FIR with equal
  pads) runs as one padded depthwise convolution that also adds the bias (no ``F.pad`` copy).
* **ToFlow.** The 1x1 flow-logit convolution's style is folded into its (3, C) weight at batch 1,
  and ``warped + x * (1 - mask)`` is one ``addcmul``.

Every function falls back to the module's own forward when gradients are enabled.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SQRT2, ModulatedConv2d, StyledConv


def _derived(module: nn.Module, name: str, sources: tuple[torch.Tensor, ...],
             build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``build()`` cached on ``module`` under ``name`` until a source tensor changes (version
    counter, storage, dtype or device)."""
    key = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in sources)
    cache = module.__dict__.setdefault("_fused_cache", {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = cache[name] = (key, build())
    return hit[1]


def _style(conv: ModulatedConv2d, style: torch.Tensor) -> torch.Tensor:
    """Per-input-channel scales s (B, in) from the style; the scaled projection is cached."""
    lin = conv.modulation
    w = _derived(lin, "weight", (lin.weight,), lambda: lin.weight * lin.scale)
    return F.linear(style, w, lin.bias)


def _weights(conv: ModulatedConv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(W / sqrt(fan_in) as the convolution wants it, sum over the kernel of its square (out, in))."""
    def build() -> torch.Tensor:
        w = conv.scale * conv.weight[0]
        return w.transpose(0, 1).contiguous() if conv.upsample else w
    w = _derived(conv, "weight", (conv.weight,), build)
    wsq = _derived(conv, "wsq", (conv.weight,),
                   lambda: (conv.scale * conv.weight[0]).pow(2).sum([2, 3]))
    return w, wsq


def _blur_kernel(conv: ModulatedConv2d, channels: int) -> tuple[torch.Tensor, int] | None:
    """The upsampling blur as a depthwise weight (C, 1, kh, kw) and its padding, or None when
    its pads differ (then :func:`fixtalk.nets.layers.upfirdn2d` is used)."""
    p0, p1 = conv.blur.pad
    if p0 != p1 or p0 < 0:
        return None
    k = conv.blur.kernel
    w = _derived(conv.blur, f"depthwise{channels}", (k,),
                 lambda: torch.flip(k, [0, 1])[None, None].expand(channels, 1, *k.shape).contiguous())
    return w, p0


def styled_conv(layer: StyledConv, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """``layer(x, style)`` with the style folded in (see the module docstring)."""
    if torch.is_grad_enabled():
        return layer(x, style)
    conv = layer.conv
    b, c = x.shape[:2]
    s = _style(conv, style)  # (B, in)
    w, wsq = _weights(conv)
    demod = torch.rsqrt(s.pow(2) @ wsq.t() + 1e-8) * SQRT2  # (B, out), activation gain folded in
    bias = layer.activate.bias.reshape(-1) * SQRT2
    fold = b == 1 and w.numel() <= x.numel()
    if fold:
        scale = (s.view(-1, 1, 1, 1) * demod.view(1, -1, 1, 1)) if conv.upsample else \
            (demod.view(-1, 1, 1, 1) * s.view(1, -1, 1, 1))
        w, xin = w * scale.to(w.dtype), x
    else:
        xin = x * s.view(b, c, 1, 1)
    if not conv.upsample:
        out = F.conv2d(xin, w, bias if fold else None, padding=conv.padding)
    else:
        out = F.conv_transpose2d(xin, w, stride=2)
        blur = _blur_kernel(conv, conv.out_ch)
        if blur is None:
            out = conv.blur(out)
            out = out + bias.view(1, -1, 1, 1) if fold else out
        else:
            out = F.conv2d(out, blur[0].to(out.dtype), bias if fold else None, padding=blur[1],
                           groups=conv.out_ch)
    if not fold:
        out = torch.addcmul(bias.view(1, -1, 1, 1).to(out.dtype), out, demod.view(b, -1, 1, 1).to(out.dtype))
    return F.leaky_relu_(out, layer.activate.negative_slope)


def flow_logits(conv: ModulatedConv2d, bias: torch.Tensor, x: torch.Tensor,
                style: torch.Tensor) -> torch.Tensor:
    """ToFlow's 1x1 modulated (not demodulated) convolution plus its bias."""
    s = _style(conv, style)
    w = _derived(conv, "weight", (conv.weight,), lambda: conv.scale * conv.weight[0])
    if x.shape[0] == 1:
        return F.conv2d(x, w * s.view(1, -1, 1, 1).to(w.dtype), bias.reshape(-1))
    return F.conv2d(x * s.view(*s.shape, 1, 1), w) + bias
