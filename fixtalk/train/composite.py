"""Mouth-swapped composites for EDTalk's lip/pose cross-reconstruction (code study 5.3).

``mouth_swap(img_a, lm_a, img_b, lm_b)`` returns b's face and pose with a's mouth: a is aligned
onto b by the similarity that maps b's (left-eye, right-eye, inner-mouth) centres onto a's, with the
translation corrected so the two mouth centres coincide; the aligned a is pasted inside the bounding
box of b's lip landmarks (48-67) grown by ``pad`` (5 px at 256 px, scaled), with a soft edge.
Batched and differentiable-free (composites are inputs, not outputs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _centres(lm: torch.Tensor) -> torch.Tensor:
    """(B, 3, 2): left-eye, right-eye, inner-mouth centres of dlib-68 landmarks (B, 68, 2)."""
    return torch.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 60:68].mean(1)], 1)


def similarity_b_to_a(lm_a: torch.Tensor, lm_b: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) pixel-space similarity sending b's points onto a's, mouth centres coinciding."""
    pa, pb = _centres(lm_a).double(), _centres(lm_b).double()
    za = torch.complex(pa[..., 0], pa[..., 1])
    zb = torch.complex(pb[..., 0], pb[..., 1])
    za0, zb0 = za - za.mean(1, keepdim=True), zb - zb.mean(1, keepdim=True)
    a = (za0 * zb0.conj()).sum(1) / (zb0.abs() ** 2).sum(1).clamp_min(1e-9)  # scale * rotation
    t = za[:, 2] - a * zb[:, 2]  # mouth centre of b -> mouth centre of a
    m = torch.stack([torch.stack([a.real, -a.imag, t.real], 1),
                     torch.stack([a.imag, a.real, t.imag], 1)], 1)
    return m.to(lm_a.dtype)


def _pixel_to_normalised(m: torch.Tensor, size: int) -> torch.Tensor:
    """Convert a pixel-space 2x3 map (output px -> input px) into affine_grid's normalised theta
    (align_corners=False: x_n = (2 x + 1) / S - 1)."""
    s = size / 2.0
    lin = m[:, :, :2]
    off = m[:, :, 2]
    # x_px = s x_n + (s - 0.5); input y_px = L x_px + off; y_n = (y_px + 0.5) / s - 1
    theta_off = (lin @ torch.full((2,), s - 0.5, dtype=m.dtype, device=m.device) + off + 0.5) / s - 1.0
    return torch.cat([lin, theta_off[..., None]], 2)


def mouth_swap(img_a: torch.Tensor, lm_a: torch.Tensor, img_b: torch.Tensor, lm_b: torch.Tensor,
               pad: float | None = None, feather: float = 2.0) -> torch.Tensor:
    """b with a's mouth: images (B, 3, S, S), landmarks (B, 68, 2) in pixels."""
    b, _, size, _ = img_b.shape
    pad = 5.0 * size / 256.0 if pad is None else pad
    m = similarity_b_to_a(lm_a, lm_b)  # b px -> a px
    theta = _pixel_to_normalised(m, size)
    grid = F.affine_grid(theta, list(img_b.shape), align_corners=False)
    warped = F.grid_sample(img_a, grid, mode="bilinear", padding_mode="border", align_corners=False)
    lips = lm_b[:, 48:68]
    lo = lips.amin(1) - pad
    hi = lips.amax(1) + pad
    coords = torch.arange(size, device=img_b.device, dtype=img_b.dtype)
    fx = torch.sigmoid((coords[None] - lo[:, 0:1]) / (feather / 4)) * torch.sigmoid((hi[:, 0:1] - coords[None]) / (feather / 4))
    fy = torch.sigmoid((coords[None] - lo[:, 1:2]) / (feather / 4)) * torch.sigmoid((hi[:, 1:2] - coords[None]) / (feather / 4))
    mask = (fy[:, :, None] * fx[:, None, :])[:, None]
    return img_b * (1 - mask) + warped * mask
