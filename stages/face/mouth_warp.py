"""A recalled mouth reshaped to the exact opening its output frame asks for.

The recall (:mod:`stages.rendering.recall`) picks, per output frame, the presenter's own frame
whose mouth is closest to the target shape; its opening is off by about 0.02 of the eye distance
(a memory of a few hundred frames does not hold every opening, and the path prefers continuity).
:func:`reshape_opening` closes that residual by moving the jaw side of the mouth: a smooth
vertical displacement along the face's own down axis, largest at the lower lip (most of a real
opening is the jaw), a quarter of it, upward, at the upper lip, nothing at the nose or below
the chin, fading sideways beyond the mouth corners. The displacement only stretches or
compresses what is there (lips, teeth, the dark of the mouth), so it is bounded: a mouth opens at
most ``limit`` beyond its recalled gap and never more than doubles it, and closes no further than
the presenter's resting gap.
"""
from __future__ import annotations

import cv2
import numpy as np

from fixtalk.measure.mouth_quality import eye_centres

#: share of the opening change taken by the upper lip (upward); the lower lip takes the rest
UPPER_SHARE = 0.25


def eye_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(unit vector along the eye line, unit vector down the face, inter-ocular distance) of 68
    landmarks."""
    left, right = eye_centres(landmarks)
    across = right - left
    iod = float(np.linalg.norm(across))
    u = across / max(iod, 1e-6)
    return u, np.array([-u[1], u[0]]), iod


def opening_change(recalled: float, target: float, rest: float, limit: float) -> float:
    """The opening change (eye-distance units) the warp applies: ``target - recalled``, at most
    ``limit`` and at most the recalled gap above rest when opening (a closed mouth has no gap to
    stretch), never below the resting gap when closing."""
    gap = max(0.0, recalled - rest)
    return float(np.clip(target - recalled, -gap, min(limit, gap)))


def reshape_opening(patch: np.ndarray, rigid: np.ndarray, lips: np.ndarray, change: float,
                    interpolation: int = cv2.INTER_LANCZOS4) -> np.ndarray:
    """``patch`` (H, W, 3) with its mouth opened (``change`` > 0) or closed (< 0) by ``change``
    eye distances. ``rigid``: the patch's 68 landmarks (patch pixels; eyes, nose, chin);
    ``lips``: its 20 lip landmarks (dlib 48-67, patch pixels)."""
    if abs(change) < 1e-4:
        return patch
    u, v, iod = eye_axes(rigid)
    corners = lips[[0, 6]]
    centre = corners.mean(axis=0)
    half_width = max(2.0, 0.5 * float(np.linalg.norm(corners[1] - corners[0])))
    down = lambda p: float((np.asarray(p) - centre) @ v)  # noqa: E731
    upper = float(np.mean([down(p) for p in lips[13:16]]))  # inner upper lip 61-63
    lower = max(upper + 1.0, float(np.mean([down(p) for p in lips[17:20]])))  # inner lower lip 65-67
    nose = min(upper - 2.0, down(rigid[33]))
    chin = max(lower + 2.0, down(rigid[8]))
    d = change * iod
    knots = np.array([nose, upper, lower, chin])
    moves = np.array([0.0, -UPPER_SHARE * d, (1 - UPPER_SHARE) * d, 0.0])
    h, w = patch.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    rel_x, rel_y = gx - np.float32(centre[0]), gy - np.float32(centre[1])
    along = rel_x * np.float32(u[0]) + rel_y * np.float32(u[1])
    across = rel_x * np.float32(v[0]) + rel_y * np.float32(v[1])
    shift = np.interp(across.ravel(), knots, moves).reshape(h, w).astype(np.float32)
    shift *= np.clip(1.0 - (along / np.float32(1.5 * half_width)) ** 2, 0.0, 1.0)
    # backward map: the pixel shown at p comes from p - shift * v
    map_x = gx - shift * np.float32(v[0])
    map_y = gy - shift * np.float32(v[1])
    return cv2.remap(np.ascontiguousarray(patch), map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
