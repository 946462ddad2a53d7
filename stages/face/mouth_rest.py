"""The footage's mouth put at rest before the network re-renders it (dubbing).

A footage frame's own mouth moves with the *original* speech. The generator moves a mouth by a
flow relative to the source's own lips (relative flow), and a small model cannot draw a closed
mouth over an open one: its lips move but the open interior stays (a "ghost" of the old words).
So each frame's lower face is first replaced, at the footage's full resolution, by the lower face
of the shot's reference frame (the most frontal frame with the least open mouth,
:func:`stages.media.footage.shot_references`), moved onto the frame by the affine transform that maps
the reference's rigid landmarks (eye corners, nose, upper jaw: points that do not move with
speech) onto the frame's, colour-matched on a ring around the region. The network then opens
that resting mouth to the new speech, as it does for a still portrait; where the new speech is
silent the mouth stays closed. Pixels outside the lower-face mask keep their exact values.

:func:`paste_lower_face` is the paste itself, for any source lower faces: the reference (above),
or the presenter's own mouths recalled from memory (:mod:`stages.rendering.memory_dub`), where
two sources in a transition are morphed along their optical flow (:func:`morph`).
"""
from __future__ import annotations

import cv2
import numpy as np

from stages.face.alignment import transform_points
from stages.media.paste import crop_roi, fit_colour, lower_face_mask

#: dlib-68 points that do not move with speech: upper jaw (0-3, 13-16), nose (27-35), eye corners.
RIGID = (0, 1, 2, 3, 13, 14, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)


def rigid_affine(src_lm: np.ndarray, dst_lm: np.ndarray) -> np.ndarray:
    """2x3 affine mapping ``src_lm``'s rigid points onto ``dst_lm``'s (least squares)."""
    src = np.asarray(src_lm, np.float64)[list(RIGID)]
    dst = np.asarray(dst_lm, np.float64)[list(RIGID)]
    design = np.concatenate([src, np.ones((len(src), 1))], axis=1)
    sol, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return sol.T


def frame_mask(landmarks: np.ndarray, matrix: np.ndarray, size: int, shape: tuple[int, ...],
               feather: float, also: np.ndarray | None = None
               ) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """(ROI, the lower-face mask in ROI pixels, the mask in crop pixels) of a frame whose 68
    ``landmarks`` (frame pixels) are cut to the model crop by ``matrix``; with ``also`` (68
    landmarks of the face pasted in, in frame pixels) the union of both faces' lower-face masks,
    so a pasted chin lower than the frame's own is covered too."""
    crop_mask = lower_face_mask(transform_points(matrix, landmarks), size, feather=feather)
    if also is not None:
        crop_mask = np.maximum(crop_mask, lower_face_mask(transform_points(matrix, also), size, feather=feather))
    roi, roi_matrix = crop_roi(matrix, size, shape)
    x0, y0, x1, y1 = roi
    mask = cv2.warpAffine(crop_mask, roi_matrix, (x1 - x0, y1 - y0),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return roi, mask, crop_mask


def rest_mouth(frame: np.ndarray, landmarks: np.ndarray, matrix: np.ndarray, reference: np.ndarray,
               ref_landmarks: np.ndarray, size: int, feather: float) -> tuple[np.ndarray, np.ndarray]:
    """(frame with the reference's resting lower face, the lower-face mask in crop pixels)."""
    out, crop_mask, _ = paste_lower_face(frame, landmarks, matrix, [(reference, ref_landmarks, 1.0)],
                                         size, feather)
    return out, crop_mask


def paste_lower_face(frame: np.ndarray, landmarks: np.ndarray, matrix: np.ndarray,
                     sources: list[tuple[np.ndarray, np.ndarray, float]], size: int, feather: float,
                     interpolation: int = cv2.INTER_LINEAR, colour=None, cover: bool = False,
                     match=fit_colour) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``frame`` with the lower face of the weighted ``sources`` (image, its 68 landmarks, weight)
    moved onto it by the rigid affine of their landmarks, blended, colour-matched on a ring
    around the mask (``match``: :func:`stages.media.paste.fit_colour` or ``ratio_colour``) and
    feathered in. ``colour`` (callable (gain, offset) -> (gain, offset)) may
    smooth the colour match over time; ``cover`` widens the mask to the first source's moved
    face. Returns (frame, mask in crop pixels, the (gain, offset) applied)."""
    affines = [rigid_affine(lm, landmarks) for _, lm, _ in sources]
    also = transform_points(affines[0], sources[0][1]) if cover else None
    roi, mask, crop_mask = frame_mask(landmarks, matrix, size, frame.shape, feather, also)
    grow = max(3, int(0.1 * np.sqrt(mask.size)))
    ys, xs = np.nonzero(mask > 0)
    if not len(ys):
        return frame.copy(), crop_mask, (np.ones(3, np.float32), np.zeros(3, np.float32))
    # work in the mask's box grown by the colour ring, not in the whole crop's footprint
    bx0, by0 = max(0, xs.min() - grow - 1), max(0, ys.min() - grow - 1)
    bx1, by1 = min(mask.shape[1], xs.max() + grow + 2), min(mask.shape[0], ys.max() + grow + 2)
    mask = mask[by0:by1, bx0:bx1]
    x0, y0 = roi[0] + bx0, roi[1] + by0
    x1, y1 = roi[0] + bx1, roi[1] + by1
    layers = []
    for (image, _, weight), affine in zip(sources, affines):
        affine[:, 2] -= (x0, y0)  # into ROI pixels
        layers.append(cv2.warpAffine(image, affine, (x1 - x0, y1 - y0), flags=interpolation,
                                     borderMode=cv2.BORDER_REPLICATE))
    if len(layers) == 2:  # a transition: morphed, not double-exposed
        moved = morph(layers[0], layers[1], float(sources[1][2]) / max(1e-6, sources[0][2] + sources[1][2]))
    else:
        moved = sum(float(w) * layer.astype(np.float32) for (_, _, w), layer in zip(sources, layers))
    target = frame[y0:y1, x0:x1]
    ring = cv2.dilate((mask > 0.02).astype(np.uint8), np.ones((grow, grow), np.uint8)) - (mask > 0.02)
    gain, offset = match(moved, target, ring.astype(np.float32), gain_range=(0.85, 1.18))
    if colour is not None:
        gain, offset = colour(gain, offset)
    matched = moved * gain + offset
    w = mask[..., None]
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(target * (1 - w) + matched * w + 0.5, 0, 255).astype(np.uint8)
    # pixels the mask does not reach keep their exact values (no float round trip)
    out[y0:y1, x0:x1][mask <= 0] = target[mask <= 0]
    return out, crop_mask, (gain, offset)


def morph(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """The image a fraction ``t`` of the way from ``a`` to ``b`` (uint8, same shape): each moved
    along the dense optical flow between them (Farneback) by its share of the way, then blended,
    so a mouth that opens between the two is shown half open rather than as two mouths."""
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    flow = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    h, w = ga.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    wa = cv2.remap(a, gx - t * flow[..., 0], gy - t * flow[..., 1], cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REPLICATE)
    wb = cv2.remap(b, gx + (1 - t) * flow[..., 0], gy + (1 - t) * flow[..., 1], cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REPLICATE)
    return (1 - t) * wa.astype(np.float32) + t * wb.astype(np.float32)
