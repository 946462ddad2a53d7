"""Compositing generated face crops into the picture: region masks, colour match, paste-back.

Two regions (``render.paste_region``):

* ``face``: the whole generated crop replaces the portrait under it, with a feathered border
  (:func:`feather_mask`). Needed whenever the head or the upper face moves (a ``pose_video``, an
  emotion or an ``expression_video``).
* ``mouth``: only the lower face (jaw, cheeks below the nose, mouth, chin and a margin below it for
  the dropping jaw; :func:`lower_face_mask`) comes from the network; eyes, brows, hair and the
  rest of the portrait stay the original pixels. With a held pose nothing else moves, so the clip
  keeps the photograph's sharpness and identity where the network would only soften them; this
  is how Wav2Lip-style dubbing tools composite too. The generated pixels are first matched in
  colour to the portrait (:func:`fit_colour`: a per-channel gain and offset fitted on the region,
  between the network's reconstruction of the portrait and the portrait itself), so that a small
  model's colour drift does not show as a patch.

``auto`` (the default) picks ``mouth`` when the clip's pose is the portrait's own and no
expression drives it, else ``face``.
"""
from __future__ import annotations

import cv2
import numpy as np

from stages.alignment import transform_points

JAW_CHEEKS = list(range(2, 15))  # dlib-68 jaw points from cheek to cheek, below the eyes
NOSE_BASE = list(range(31, 36))


def feather_mask(size: int, feather: float) -> np.ndarray:
    """(size, size) weights: 1 inside, a smooth ramp over ``feather * size`` pixels to 0 at the
    crop's border (smoothstep), so the pasted crop has no visible seam."""
    width = max(1.0, float(feather) * size)
    pos = np.arange(size, dtype=np.float32) + 0.5
    ramp = np.clip(np.minimum(pos, size - pos) / width, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


def lower_face_mask(landmarks: np.ndarray, size: int, margin: float = 0.06,
                    drop: float = 0.12, feather: float = 0.06) -> np.ndarray:
    """(size, size) weights of the lower face in crop pixels, from the 68 landmarks (crop coords).

    The convex hull of the jaw (cheek to cheek) and the nose base, grown by ``margin`` and
    extended down by ``drop`` (fractions of the face height, eyebrows to chin: the chin of an open
    mouth sits lower than the portrait's), then blurred (Gaussian sigma ``feather`` x face height)
    and kept zero at the crop's border.
    """
    pts = np.asarray(landmarks, np.float64)
    face_h = max(1.0, pts[8, 1] - pts[17:27, 1].min())
    region = pts[JAW_CHEEKS + NOSE_BASE]
    lowered = region + np.array([0.0, drop * face_h])
    hull = cv2.convexHull(np.round(np.concatenate([region, lowered]) * 4).astype(np.int32))
    mask = np.zeros((size * 4, size * 4), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=0)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    grow = int(round(margin * face_h))
    if grow > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, feather * face_h))
    return np.minimum(mask, feather_mask(size, 0.05)).astype(np.float32)


def crop_landmarks(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Portrait landmarks -> crop coordinates with the 2x3 portrait->crop matrix."""
    return transform_points(np.asarray(matrix, np.float64), landmarks)


def fit_colour(generated: np.ndarray, target: np.ndarray, weight: np.ndarray,
               gain_range: tuple[float, float] = (0.7, 1.4)) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (gain, offset) with gain * generated + offset ~ target, least squares over the
    pixels where ``weight`` > 0.5 (both images (S, S, 3) uint8); the gain is kept in
    ``gain_range`` so a degenerate region cannot produce a wild transform."""
    keep = weight > 0.5
    if keep.sum() < 16:
        return np.ones(3, np.float32), np.zeros(3, np.float32)
    x = generated[keep].astype(np.float64)
    y = target[keep].astype(np.float64)
    gain = np.ones(3)
    for c in range(3):
        var = x[:, c].var()
        if var > 1e-6:
            gain[c] = np.clip(np.mean((x[:, c] - x[:, c].mean()) * (y[:, c] - y[:, c].mean())) / var,
                              *gain_range)
    offset = y.mean(0) - gain * x.mean(0)
    return gain.astype(np.float32), offset.astype(np.float32)


def apply_colour(frames: np.ndarray, gain: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """uint8 frames (..., 3) -> gain * frames + offset, rounded and clipped to uint8."""
    return np.clip(frames.astype(np.float32) * gain + offset + 0.5, 0, 255).astype(np.uint8)


def blend_crop(base: np.ndarray, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Crop-sized composite: ``base`` (S, S, 3) where mask is 0, ``frames`` (N, S, S, 3) where 1."""
    m = mask[None, :, :, None]
    out = base[None].astype(np.float32) * (1 - m) + frames.astype(np.float32) * m
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class PasteBack:
    """Put generated crops back into the portrait with the inverse of the crop transform.

    ``mask`` is the crop-space weight of the generated pixels (default: the whole crop with a
    feathered border). Only the portrait's region under the crop is warped and blended per
    frame; the rest of the picture is copied.
    """

    def __init__(self, portrait: np.ndarray, matrix: np.ndarray, size: int, feather: float,
                 mask: np.ndarray | None = None):
        self.portrait = np.ascontiguousarray(portrait)
        h, w = portrait.shape[:2]
        inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
        corners = transform_points(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
        if x1 <= x0 or y1 <= y0:
            raise ValueError("the face crop lies outside the portrait")
        self.roi = (int(x0), int(y0), int(x1), int(y1))
        roi_matrix = np.asarray(matrix, np.float64).copy()  # ROI pixel -> crop pixel
        roi_matrix[:, 2] += roi_matrix[:, :2] @ np.array([x0, y0], np.float64)
        self.matrix = roi_matrix
        self.dsize = (int(x1 - x0), int(y1 - y0))
        crop_mask = feather_mask(size, feather) if mask is None else np.asarray(mask, np.float32)
        warped = cv2.warpAffine(crop_mask, roi_matrix, self.dsize,
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self.mask = warped[:, :, None]
        self.base = portrait[y0:y1, x0:x1].astype(np.float32) * (1.0 - self.mask)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.roi
        out = np.repeat(self.portrait[None], len(crops), axis=0)
        for i, crop in enumerate(crops):
            face = cv2.warpAffine(crop, self.matrix, self.dsize,
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
            blend = self.base + face.astype(np.float32) * self.mask
            out[i, y0:y1, x0:x1] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
        return out
