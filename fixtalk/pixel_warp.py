"""Source-pixel warp (:class:`fixtalk.config.PixelWarp`): the generator's frame G with the
source's own pixels wherever G only moves them.

FOMM-style generators warp the source image and inpaint what the warp cannot show; LIA/EDTalk
(and so FixTalk) instead render every pixel from warped source features, which costs a small
model its sharpness. This policy brings the image-space warp back at inference without changing
the network: W = grid_sample(I_s, phi_K), phi_K the finest decoder level's flow exactly as G
warps with it (tanh displacement, relative-flow offset subtracted), and

    out = W + g * (G - W),   g = clip((mean_rgb |blur_sigma(G) - blur_sigma(W)| - low) / ramp, 0, 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fixtalk.config import PixelWarp
from fixtalk.nets.decoder import identity_grid


def finest_flow(flow_logits: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """Sampling grid (B, S, S, 2) of the finest level from its logits (B, 3, S, S), as
    :class:`fixtalk.nets.decoder.ToFlow` builds it."""
    disp = torch.tanh(flow_logits[:, 0:2]).permute(0, 2, 3, 1)
    if offset is not None:
        disp = disp - offset.to(disp.dtype)
    return disp + identity_grid(flow_logits.shape[-1], flow_logits.device, disp.dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian of ``sigma`` pixels (replicate padding), per channel."""
    if sigma <= 0:
        return x
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def pixel_warp(generated: torch.Tensor, source: torch.Tensor, grid: torch.Tensor,
               cfg: PixelWarp) -> torch.Tensor:
    """``generated`` G (B, 3, S, S) and ``source`` I_s (1|B, 3, S, S) in [-1, 1], ``grid`` phi_K
    (B, S, S, 2) -> the gated frame of the module docstring (same shape as G)."""
    src = source.to(generated.dtype).expand(generated.shape[0], -1, -1, -1)
    warped = F.grid_sample(src, grid.to(generated.dtype), mode="bilinear", padding_mode="border",
                           align_corners=False)
    # compared after a low-pass, so that G's softer edges do not count as departures: only what
    # G changes over a few pixels (a dark mouth opening, closing eyes) does
    diff = (gaussian_blur(generated, cfg.sigma) - gaussian_blur(warped, cfg.sigma)).abs().mean(1, keepdim=True)
    gate = ((diff - cfg.low) / max(cfg.ramp, 1e-6)).clamp(0, 1)
    return warped + gate * (generated - warped)
