"""Compositing generated face crops into the picture: region masks, colour match, paste-back.

Two regions (``render.paste_region``):

* ``face``: the whole generated crop replaces the portrait under it, with a feathered border
  (:func:`feather_mask`). Needed whenever the head or the upper face moves (a ``pose_video``, an
  emotion or an ``expression_video``).
* ``mouth``: only the moving lower face (lips, the skin between nose and chin, and a margin below
  the chin for the dropping jaw; :func:`lower_face_mask`) comes from the network; eyes, brows,
  hair and the rest of the portrait stay the original pixels. With a held pose nothing else
  moves, so the clip keeps the photograph's sharpness and identity where the network would only
  soften them (Wav2Lip-style dubbing tools composite the lower face too). Inside the region,
  :class:`LowerFaceComposite` adds to the photograph only what the network *changes*: per frame,
  the difference between the rendered frame and the network's rendering of the portrait at rest
  where the change is small (skin that barely moves keeps the photograph's detail), and the
  rendered pixels themselves where it is large (an opening mouth), both colour-matched to the
  portrait (:func:`fit_colour`) so a small model's colour drift does not show as a patch.

``auto`` (the default) picks ``mouth`` when the clip's pose is the portrait's own and no
expression drives it, else ``face``.
"""
from __future__ import annotations

import cv2
import numpy as np

from stages.face.alignment import transform_points

CHIN = list(range(6, 11))  # dlib-68 jaw points around the chin
NOSE_BASE = list(range(31, 36))
LIPS = list(range(48, 60))  # outer lip contour


def feather_mask(size: int, feather: float) -> np.ndarray:
    """(size, size) weights: 1 inside, a smooth ramp over ``feather * size`` pixels to 0 at the
    crop's border (smoothstep), so the pasted crop has no visible seam."""
    width = max(1.0, float(feather) * size)
    pos = np.arange(size, dtype=np.float32) + 0.5
    ramp = np.clip(np.minimum(pos, size - pos) / width, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


def lower_face_mask(landmarks: np.ndarray, size: int, margin: float = 0.05,
                    drop: float = 0.10, feather: float = 0.05) -> np.ndarray:
    """(size, size) weights of the moving lower face in crop pixels, from the 68 landmarks (crop
    coords): the convex hull of the lips, the nose base and the chin (jaw points 6-10), the chin
    extended down by ``drop`` (the chin of an open mouth sits lower than the portrait's), grown by
    ``margin``; then blurred (Gaussian sigma ``feather``); all three are fractions of the face
    height, brows to chin. Cheeks and jaw line stay the photograph's; the weights are zero at the
    crop's border.
    """
    pts = np.asarray(landmarks, np.float64)
    face_h = max(1.0, pts[8, 1] - pts[17:27, 1].min())
    chin = pts[CHIN] + np.array([0.0, drop * face_h])
    region = np.concatenate([pts[LIPS], pts[NOSE_BASE], pts[CHIN], chin])
    hull = cv2.convexHull(np.round(region * 4).astype(np.int32))
    mask = np.zeros((size * 4, size * 4), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    grow = int(round(margin * face_h))
    if grow > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, feather * face_h))
    return np.minimum(mask, feather_mask(size, 0.05)).astype(np.float32)


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


def ratio_colour(generated: np.ndarray, target: np.ndarray, weight: np.ndarray,
                 gain_range: tuple[float, float] = (0.7, 1.4)) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (gain, 0) with gain = mean(target) / mean(generated) over the pixels where
    ``weight`` > 0.5: a change of light between two frames of one footage. Unlike the least-squares
    slope of :func:`fit_colour`, which two different frames' unregistered texture drags towards 0
    (regression dilution: 0.86 between two kitchen frames 0.8 s apart, 26 % of the mouth's detail
    lost), it keeps the pasted mouth's contrast."""
    keep = weight > 0.5
    if keep.sum() < 16:
        return np.ones(3, np.float32), np.zeros(3, np.float32)
    gain = target[keep].astype(np.float64).mean(0) / np.maximum(generated[keep].astype(np.float64).mean(0), 1.0)
    return np.clip(gain, *gain_range).astype(np.float32), np.zeros(3, np.float32)


class LowerFaceComposite:
    """Crop-space change layers for the ``mouth`` region (see the module docstring).

    ``rest`` (S, S, 3) uint8 is the network's rendering of the portrait at rest and ``crop`` the
    portrait's own crop. For a rendered frame R the change layer is
    ``C = mask * (w * (g R + o - crop) + (1 - w) * g (R - rest))`` with the colour fit (g, o) and
    ``w = clip(blur(|g (R - rest)|) / change_scale, 0, 1)``; the output is ``picture + C``.
    """

    def __init__(self, crop: np.ndarray, rest: np.ndarray, mask: np.ndarray,
                 change_scale: float = 24.0, blur_sigma: float = 1.5):
        self.crop = crop.astype(np.float32)
        self.gain, self.offset = fit_colour(rest, crop, mask)
        self.rest = rest.astype(np.float32)
        self.mask = mask.astype(np.float32)[..., None]
        self.change_scale = float(change_scale)
        self.blur_sigma = float(blur_sigma)

    def changes(self, frames: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 rendered frames -> (N, S, S, 3) float32 change layers."""
        out = np.empty(frames.shape, np.float32)
        for i, frame in enumerate(frames.astype(np.float32)):
            delta = (frame - self.rest) * self.gain
            size = cv2.GaussianBlur(np.abs(delta).mean(-1), (0, 0), self.blur_sigma)
            w = np.clip(size / self.change_scale, 0.0, 1.0)[..., None]
            direct = frame * self.gain + self.offset - self.crop
            out[i] = self.mask * (w * direct + (1.0 - w) * delta)
        return out

    def on_crop(self, frames: np.ndarray) -> np.ndarray:
        """Crop-sized output: the portrait's crop plus the change layers, uint8."""
        return np.clip(self.crop[None] + self.changes(frames) + 0.5, 0, 255).astype(np.uint8)


def crop_roi(matrix: np.ndarray, size: int, shape: tuple[int, ...]
             ) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """((x0, y0, x1, y1), ROI pixel -> crop pixel matrix): the picture's region under a
    ``size`` crop cut with ``matrix`` (picture -> crop), clipped to the picture ``shape``."""
    h, w = shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    corners = transform_points(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
        raise ValueError("the face crop lies outside the picture")
    roi_matrix = np.asarray(matrix, np.float64).copy()
    roi_matrix[:, 2] += roi_matrix[:, :2] @ np.array([x0, y0], np.float64)
    return (int(x0), int(y0), int(x1), int(y1)), roi_matrix


def add_change(frame: np.ndarray, change: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 plus one crop-space change layer (S, S, 3) float32 (zero at the
    crop's border) warped into place with the inverse of ``matrix`` (frame -> crop). Pixels the
    layer does not reach keep their exact values."""
    (x0, y0, x1, y1), roi_matrix = crop_roi(matrix, change.shape[0], frame.shape)
    moved = cv2.warpAffine(np.ascontiguousarray(change, np.float32), roi_matrix, (x1 - x0, y1 - y0),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(frame[y0:y1, x0:x1] + moved + 0.5, 0, 255).astype(np.uint8)
    return out


class PasteBack:
    """Put generated crops back into the portrait with the inverse of the crop transform.

    ``__call__`` replaces the portrait under the crop by the generated crop (feathered border);
    :meth:`add` adds change layers instead. Only the portrait's region under the crop is warped
    and blended per frame; the rest of the picture is copied.
    """

    def __init__(self, portrait: np.ndarray, matrix: np.ndarray, size: int, feather: float):
        self.portrait = np.ascontiguousarray(portrait)
        self.roi, roi_matrix = crop_roi(matrix, size, portrait.shape)
        x0, y0, x1, y1 = self.roi
        self.matrix = roi_matrix
        self.dsize = (int(x1 - x0), int(y1 - y0))
        warped = cv2.warpAffine(feather_mask(size, feather), roi_matrix, self.dsize,
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self.mask = warped[:, :, None]
        self.base = portrait[y0:y1, x0:x1].astype(np.float32) * (1.0 - self.mask)

    def add(self, changes: np.ndarray) -> np.ndarray:
        """Frames of the portrait plus crop-space change layers (N, S, S, 3) float32 (zero at
        the crop's border), warped into place."""
        x0, y0, x1, y1 = self.roi
        out = np.repeat(self.portrait[None], len(changes), axis=0)
        roi = self.portrait[y0:y1, x0:x1].astype(np.float32)
        for i, change in enumerate(changes):
            moved = cv2.warpAffine(change, self.matrix, self.dsize,
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            out[i, y0:y1, x0:x1] = np.clip(roi + moved + 0.5, 0, 255).astype(np.uint8)
        return out

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
