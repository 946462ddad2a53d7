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
               feather: float) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """(ROI, the lower-face mask in ROI pixels, the mask in crop pixels) of a frame whose 68
    ``landmarks`` (frame pixels) are cut to the model crop by ``matrix``."""
    crop_mask = lower_face_mask(transform_points(matrix, landmarks), size, feather=feather)
    roi, roi_matrix = crop_roi(matrix, size, shape)
    x0, y0, x1, y1 = roi
    mask = cv2.warpAffine(crop_mask, roi_matrix, (x1 - x0, y1 - y0),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return roi, mask, crop_mask


def rest_mouth(frame: np.ndarray, landmarks: np.ndarray, matrix: np.ndarray, reference: np.ndarray,
               ref_landmarks: np.ndarray, size: int, feather: float) -> tuple[np.ndarray, np.ndarray]:
    """(frame with the reference's resting lower face, the lower-face mask in crop pixels)."""
    roi, mask, crop_mask = frame_mask(landmarks, matrix, size, frame.shape, feather)
    x0, y0, x1, y1 = roi
    affine = rigid_affine(ref_landmarks, landmarks)
    affine[:, 2] -= (x0, y0)  # into ROI pixels
    moved = cv2.warpAffine(reference, affine, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    target = frame[y0:y1, x0:x1]
    grow = max(3, int(0.1 * np.sqrt(mask.size)))
    ring = cv2.dilate((mask > 0.02).astype(np.uint8), np.ones((grow, grow), np.uint8)) - (mask > 0.02)
    gain, offset = fit_colour(moved, target, ring.astype(np.float32), gain_range=(0.85, 1.18))
    matched = moved.astype(np.float32) * gain + offset
    w = mask[..., None]
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(target * (1 - w) + matched * w + 0.5, 0, 255).astype(np.uint8)
    # pixels the mask does not reach keep their exact values (no float round trip)
    out[y0:y1, x0:x1][mask <= 0] = target[mask <= 0]
    return out, crop_mask
