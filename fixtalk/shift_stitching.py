"""Shift stitching: a driving video's sideways/vertical head shift bypasses the generator.

Why. EDTalk/FixTalk read the pose weights alpha_pose off each driving frame with the motion
encoder E, so the generator G must render the head's *shift* in the frame as well as its turn.
A generator that moves an unseen face by a flow generated from a code (LIA/EDTalk) renders a
shift non-rigidly: the shipped default, adapted to a portrait, moves the nose twice as far as the
jaw ends, which reads as a turn, and a real turn that comes with a shift is drowned (head yaw
followed at r = 0.27 on the held-out clips, docs/model_card.md). Learning both in a 600-step
portrait adaptation does not separate them.

How (an inference policy of this project, ``motion.shift_stitching``,
:class:`fixtalk.config.ShiftStitching`, after the stitching idea of LivePortrait, Guo et al.
2024, done here analytically instead of with a learned module):

1. :func:`fit_head_motion`: per driving frame, the head motion
   p = (yaw, pitch, roll, log scale, tx, ty) that maps a reference frame's rigid dlib-68 landmarks
   (jaw, brows, nose, eye corners; not the lips or lids) onto the frame's under the pseudo-depth
   head model of :mod:`fixtalk.train.face_warp` (least squares), relative to the clip's median
   and smoothed over ``smoothing_sigma`` frames.
2. The driving frame's head is moved back by its shift (:func:`move_heads`, the face and a ring
   around it move as a whole, the frame border stays) before E reads it: the generator only
   sees a head that turns, tilts and scales in place, as the portrait adaptation clips
   (``adapt.recipe.shift=false``) teach it.
3. The shift is put back rigidly on the rendered frame (:func:`shift_heads`).

``enabled=False`` drives the generator with the video's own frames, as EDTalk does.
"""
from __future__ import annotations

import numpy as np

from fixtalk.train import face_warp
from fixtalk.train.face_warp import Motion

#: dlib-68 points that move rigidly with the head (jaw, brows, nose, eye corners).
RIGID_POINTS = np.r_[0:27, 27:36, 36, 39, 42, 45]
#: Columns of a head-motion array; tx/ty in head-size units (face_warp.head_transform).
PARAMS = ("yaw", "pitch", "roll", "log_scale", "tx", "ty")
_RING_DEPTH = 0.3  # the ring around the head moves as the synthetic warp moves it
#: Bounds of a fitted motion (degrees, log scale, head-size units): a landmark fit that lost the
#: face must not fling the rendered head across the frame.
LIMITS = np.array([45.0, 45.0, 45.0, 0.4, 0.25, 0.25])


def as_motion(p: np.ndarray, shift: bool = True) -> Motion:
    """The :class:`fixtalk.train.face_warp.Motion` of one row p of :data:`PARAMS` (without its
    shift when ``shift`` is False)."""
    return Motion(yaw=float(p[0]), pitch=float(p[1]), roll=float(p[2]), scale=float(np.exp(p[3])),
                  tx=float(p[4]) if shift else 0.0, ty=float(p[5]) if shift else 0.0)


def fit_one(reference: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Head motion p (6,) that maps ``reference`` (68, 2) onto ``landmarks`` (68, 2)."""
    from scipy.optimize import least_squares

    ref, target = reference[RIGID_POINTS], landmarks[RIGID_POINTS]
    depth = face_warp._DEPTH[RIGID_POINTS]

    def residual(p: np.ndarray) -> np.ndarray:
        return (face_warp.head_transform(ref, reference, as_motion(p), depth=depth) - target).ravel()

    return least_squares(residual, np.zeros(6)).x


def fit_head_motion(landmarks: np.ndarray, smoothing_sigma: float = 1.0,
                    reference: int | None = None) -> np.ndarray:
    """Per-frame head motion (N, 6) of a clip's landmarks (N, 68, 2; NaN rows = no face found),
    relative to the clip's median motion (or to frame ``reference``'s, FOMM's relative mode) and
    bounded by :data:`LIMITS`; frames without a face take their neighbours' motion. Raises
    ValueError when no frame has a face."""
    from scipy.ndimage import gaussian_filter1d

    lms = np.asarray(landmarks, np.float64)
    found = ~np.isnan(lms).any(axis=(1, 2))
    if not found.any():
        raise ValueError("no face found in any frame")
    ref = lms[int(np.argmax(found))]
    fitted = np.array([fit_one(ref, lm) for lm in lms[found]])
    index = np.arange(len(lms))
    params = np.stack([np.interp(index, index[found], fitted[:, j]) for j in range(6)], 1)
    origin = np.median(params, axis=0) if reference is None else params[reference].copy()
    params = np.clip(params - origin, -LIMITS, LIMITS)
    if smoothing_sigma > 0 and len(params) > 1:
        params = gaussian_filter1d(params, smoothing_sigma, axis=0, mode="nearest")
    return params


def shift_pixels(params: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The (tx, ty) of ``params`` (N, 6) in pixels (N, 2) of a face with these 68 ``landmarks``
    (its inter-ocular distance sets the head size; NaN rows are ignored)."""
    lm = np.nanmedian(np.asarray(landmarks, np.float64).reshape(-1, 68, 2), axis=0)
    return np.asarray(params)[:, 4:6] * 4.5 * face_warp._head_frame(lm)[1]


def move_heads(frames: np.ndarray, landmarks: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Frames (N, S, S, 3) whose heads, at ``landmarks`` (N, 68, 2), are moved by ``shifts``
    (N, 2) px: the face points and a ring around the head move as a whole, the frame border stays,
    and in between the warp falls off piecewise-affinely (the synthetic warp's falloff).
    Frames without landmarks (NaN) or with no shift are returned as they are."""
    import cv2

    size = int(frames.shape[1])
    out = np.array(frames, copy=True)
    for i, (lm, t) in enumerate(zip(np.asarray(landmarks, np.float64), np.asarray(shifts, np.float64))):
        if np.isnan(lm).any() or not np.any(np.abs(t) > 1e-3):
            continue
        ring, border = face_warp.control_points(lm, size)
        head = np.concatenate([lm, ring])
        mx, my = face_warp.warp_maps(np.concatenate([head, border]), np.concatenate([head + t, border]),
                                     size, 1.0)
        out[i] = cv2.remap(frames[i], mx, my, interpolation=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT101)
    return out


def stabilise(frames: np.ndarray, landmarks: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Driving frames with each head moved back by its fitted shift (what E reads)."""
    return move_heads(frames, landmarks, -shift_pixels(params, landmarks))


def shift_heads(frames: np.ndarray, portrait_landmarks: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Rendered frames (N, S, S, 3) with the portrait's head moved rigidly by each row of
    ``params``' shift; the face points are placed where the head model puts them for the frame's
    turn, tilt and scale."""
    lm = np.asarray(portrait_landmarks, np.float64)
    placed = np.stack([face_warp.head_transform(lm, lm, as_motion(p, shift=False)) for p in params])
    return move_heads(frames, placed, shift_pixels(params, lm))


def stitched_weights(renderer, frames: np.ndarray, landmarks: np.ndarray, smoothing_sigma: float = 1.0,
                     source_landmarks: np.ndarray | None = None):
    """Bank weights of driving frames (N, S, S, 3) with their ``landmarks`` (N, 68, 2) as the
    pipeline reads a pose video with shift stitching, and the head motion (N, 6) whose shift
    :func:`shift_heads` puts back on the rendered frames. ``source_landmarks``: the frames are
    of the source's own video (self-reconstruction), so their motion is taken relative to the
    source frame, where the generator keeps the head, not to their median."""
    if source_landmarks is None:
        head = fit_head_motion(landmarks, smoothing_sigma)
    else:
        both = np.concatenate([np.asarray(source_landmarks, np.float64)[None], landmarks])
        head = fit_head_motion(both, smoothing_sigma, reference=0)[1:]
    return renderer.motion_weights(stabilise(frames, landmarks, head)), head
