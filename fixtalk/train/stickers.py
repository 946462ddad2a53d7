"""Content augmentation for copy-faithful decoding: "stickers" that move with the scene (a *choice*).

With one real training face the decoder can render its hair, clothes and background from memory
instead of copying them from the source maps, and a held-out face then comes out wrong where it
differs (a dark cap turns green). A sticker is a patch of an unrelated public-domain / CC0 picture
pasted onto the source frame (away from the mouth) and, moved by the known driver -> source warp
(:mod:`fixtalk.train.warp_targets`), onto the driving frame. Its content is unpredictable, so the
only way to reconstruct it is to copy it from the source through the warp.

Pictures (scikit-image sample data, installed with the package): ``coffee`` (Rachel Michetti,
CC0), ``chelsea`` (Stefan van der Walt, CC0), ``rocket`` (SpaceX, public domain),
``hubble_deep_field`` (NASA, public domain).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PICTURES = ("coffee", "chelsea", "rocket", "hubble_deep_field")
_CACHE: dict[str, torch.Tensor] = {}


def picture(name: str) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1] of a scikit-image sample picture (cached)."""
    if name not in _CACHE:
        from skimage import data

        img = np.asarray(getattr(data, name)())[..., :3]
        _CACHE[name] = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    return _CACHE[name]


def _patch(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    pic = picture(PICTURES[rng.integers(len(PICTURES))])
    ph, pw = pic.shape[1:]
    scale = rng.uniform(0.15, 0.6)
    ch, cw = max(4, int(ph * scale)), max(4, int(pw * scale))
    y, x = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
    crop = pic[:, y:y + ch, x:x + cw][None]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]


def _shape(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """(1, h, w) alpha: a hard-edged rectangle or an ellipse with a 1-pixel feathered edge."""
    if rng.random() < 0.5:
        return torch.ones(1, h, w)
    yy = (torch.arange(h) + 0.5 - h / 2) / (h / 2)
    xx = (torch.arange(w) + 0.5 - w / 2) / (w / 2)
    r = (yy[:, None] ** 2 + xx[None] ** 2).sqrt()
    return ((1.0 - r) * min(h, w) / 2).clamp(0, 1)[None]


def add_stickers(source: torch.Tensor, driver: torch.Tensor, flow: torch.Tensor, mouth: torch.Tensor,
                 source_landmarks: np.ndarray, rng: np.random.Generator,
                 count: tuple[int, int] = (1, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste 1..3 stickers on ``source`` (3, S, S) and their warped copies on ``driver``.

    ``flow`` (2, S, S) and ``mouth`` (1, S, S) are the warp targets of the pair; stickers avoid
    the source's mouth box (landmarks 48-67 grown by 30 %) and never cover the driver's open mouth.
    """
    size = source.shape[-1]
    lo, hi = source_landmarks[48:68].min(0), source_landmarks[48:68].max(0)
    grow = 0.3 * (hi - lo) + 2
    lo, hi = lo - grow, hi + grow
    layer = torch.zeros(3, size, size)
    alpha = torch.zeros(1, size, size)
    placed = 0
    for _ in range(12):  # a few tries to find spots away from the mouth
        if placed >= rng.integers(count[0], count[1] + 1):
            break
        h, w = (int(v) for v in rng.integers(size // 8, size // 3, size=2))
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        if x < hi[0] and x + w > lo[0] and y < hi[1] and y + h > lo[1]:
            continue
        a = _shape(rng, h, w)
        region = (slice(None), slice(y, y + h), slice(x, x + w))
        # premultiplied "over" compositing
        layer[region] = _patch(rng, h, w) * a + layer[region] * (1 - a)
        alpha[region] = a + alpha[region] * (1 - a)
        placed += 1
    if not placed:
        return source, driver
    warped = F.grid_sample(torch.cat([layer, alpha])[None], flow.permute(1, 2, 0)[None],
                           mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    keep = 1.0 - mouth
    src = source * (1 - alpha) + layer
    drv = driver * (1 - warped[3:4] * keep) + warped[:3] * keep
    return src, drv
