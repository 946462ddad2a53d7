"""Random colour transforms of whole training items (identity augmentation, a *choice*).

The shipped default learns from one real face. Its decoder renders RGB from warped encoder maps
through learned 1x1 projections (``to_rgbs``); trained on one face's colours those projections
drift into "this face's palette" and a held-out face comes out tinted (a navy cap turns teal).
A random colour transform per training item, the same for its source and driving frames, makes
the palette unpredictable, so the only way to reconstruct the driver is to copy colours from the
source faithfully. The transform: hue rotation about the grey axis, saturation (sometimes 0,
i.e. a grey photograph), contrast and brightness, on images in [-1, 1].
"""
from __future__ import annotations

import math

import numpy as np
import torch

GREY = np.full((3, 3), 1.0 / 3.0)


def random_colour_transform(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (3, 3) matrix M and (3,) offset b; x -> M x + b maps RGB in [-1, 1]."""
    theta = rng.uniform(-math.pi, math.pi)
    k = np.ones(3) / math.sqrt(3.0)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    hue = np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx  # Rodrigues
    sat = 0.0 if rng.random() < 0.15 else rng.uniform(0.4, 1.4)
    m = GREY + sat * (hue - GREY)
    contrast = rng.uniform(0.7, 1.3)
    return (contrast * m).astype(np.float32), np.full(3, rng.uniform(-0.15, 0.15), np.float32)


def apply_colour(images: torch.Tensor, m: np.ndarray, b: np.ndarray) -> torch.Tensor:
    """Apply x -> M x + b to (..., 3, H, W) images in [-1, 1] (clamped)."""
    out = torch.einsum("ij,...jhw->...ihw", torch.from_numpy(m), images)
    return out.add_(torch.from_numpy(b)[:, None, None]).clamp_(-1.0, 1.0)
