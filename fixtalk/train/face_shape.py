"""Face-geometry pseudo-identities for the synthetic set (``fixtalk data synthetic --reshape P``).

Colour, crop and flip augmentation leave a face's geometry alone, and the held-out evaluation shows
that geometry is what a model trained on one face fails to read: its decoder renders the source
warped by its own flow, and that flow misses an unseen face's motion by ~2 px (docs/model_card.md).
This module gives a training portrait a new, plausible geometry before its clip is made: eyes
and brows further apart or closer and higher or lower, a longer or shorter nose, the mouth
higher or lower, wider or narrower, a wider or narrower jaw and a longer or shorter chin, all in
the aligned portrait's upright frame, rendered by the same piecewise-affine warp as the driving
frames (fixtalk.train.face_warp) with the head ring and the image border fixed.
"""
from __future__ import annotations

import numpy as np

from fixtalk.train.face_warp import control_points, separate_inner_lips, warp_maps

_JAW, _CHIN = np.r_[0:17], np.r_[5:12]
_BROWS_EYES = np.r_[17:27, 36:48]
_NOSE_TIP = np.r_[31:36]
_MOUTH = np.r_[48:68]


def random_face_shape(lm: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """New 68 landmarks (same units as ``lm``, an upright face) with a random face geometry.
    Every change is a fraction of the face height (brow to chin) or a width factor."""
    lm = np.asarray(lm, np.float64)
    out = lm.copy()
    cx = lm[_JAW, 0].mean()
    height = lm[8, 1] - lm[17:27, 1].mean()
    u = lambda a, b: strength * rng.uniform(a, b)  # noqa: E731

    def spread(idx: np.ndarray, factor: float, about: float) -> None:
        out[idx, 0] = about + (out[idx, 0] - about) * factor

    spread(_BROWS_EYES, 1.0 + u(-0.08, 0.08), cx)
    out[_BROWS_EYES, 1] += u(-0.035, 0.035) * height
    out[_NOSE_TIP, 1] += u(-0.035, 0.035) * height
    out[_MOUTH, 1] += u(-0.035, 0.035) * height
    spread(_MOUTH, 1.0 + u(-0.08, 0.1), lm[_MOUTH, 0].mean())
    spread(_JAW, 1.0 + u(-0.07, 0.07), cx)
    chin = u(-0.03, 0.04) * height
    out[_CHIN, 1] += chin * np.cos(np.linspace(-np.pi / 2, np.pi / 2, len(_CHIN)))
    out[_MOUTH, 1] += 0.5 * chin  # a longer chin lowers the mouth a little with it
    return out


def reshape_portrait(image: np.ndarray, lm: np.ndarray, size: int, rng: np.random.Generator,
                     strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(image, landmarks) of the aligned portrait with a new face geometry.

    ``image`` is the aligned portrait at k * size pixels, ``lm`` its landmarks in ``size`` units
    (as face_warp.render_frame takes them); the result has the same layout."""
    import cv2

    k = image.shape[0] / size
    new = random_face_shape(lm, rng, strength)
    ring, border = control_points(lm, size)
    dst = separate_inner_lips(np.concatenate([new, ring, border]) * k)
    src = np.concatenate([lm, ring, border]) * k
    mx, my = warp_maps(src, dst, image.shape[0], 1.0)
    out = cv2.remap(image, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return out, new.astype(np.asarray(lm).dtype)
