"""What a mouth looks like in one frame, from its 68 dlib landmarks and its pixels: the descriptor
the presenter memory indexes its frames by and the recall matches targets against
(stages/rendering/presenter_memory.py, stages/rendering/recall.py).

All lengths are over the inter-ocular distance (eye centres, points 36-41 and 42-47), so a face's
size in the frame does not matter:

* ``opening``: inner-lip gap, the mean of |61-67|, |62-66|, |63-65|
  (:func:`fixtalk.measure.mouth_quality.lip_gap`, the measure QC and the benchmark judge a dub
  by: a real mouth in speech has a std of about 0.06-0.09 of it);
* ``width``: mouth-corner distance |48-54|;
* ``rounding``: outer-lip height (|51-57|) over outer-lip width: high for a rounded, protruded
  mouth (/o/, /u/, /w/), low for a spread one (/i/, a smile);
* ``teeth``: share of the inner-mouth polygon (60-67) that is bright and unsaturated against the
  lower face's own skin (teeth show on open vowels and in a smile);
* ``sharpness``: variance of the Laplacian of the grey mouth patch in the canonical face frame
  (:func:`fixtalk.measure.mouth_quality.mouth_patch`, 64 px per eye distance), as QC measures it.
"""
from __future__ import annotations

import cv2
import numpy as np

from fixtalk.measure.mouth_quality import MouthBox, eye_centres, laplacian_variance, lip_gap, mouth_patch

#: descriptor columns, in order
SHAPE_FIELDS = ("opening", "width", "rounding")
#: the mouth patch whose detail is scored, in eye distances about the eyes' midpoint
SHARPNESS_BOX = MouthBox(-0.75, 0.55, 0.75, 1.45)


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the eye centres (points 36-41, 42-47), in the landmarks' pixels."""
    left, right = eye_centres(landmarks)
    return float(np.linalg.norm(right - left)) + 1e-6


def mouth_shape(landmarks: np.ndarray) -> np.ndarray:
    """(opening, width, rounding) of one face (see the module docstring)."""
    pts = np.asarray(landmarks, np.float64)
    width = np.linalg.norm(pts[54] - pts[48])
    height = np.linalg.norm(pts[57] - pts[51])
    return np.array([lip_gap(pts), width / inter_ocular(pts), height / (width + 1e-6)], np.float32)


def mouth_box(landmarks: np.ndarray, margin: float = 0.25) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the lips (48-67), grown by ``margin`` of the inter-ocular distance."""
    pts = np.asarray(landmarks, np.float64)[48:68]
    grow = margin * inter_ocular(landmarks)
    x0, y0 = pts.min(0) - grow
    x1, y1 = pts.max(0) + grow
    return int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))


def sharpness(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian of the canonical mouth patch (detail; see the module docstring)."""
    return laplacian_variance(mouth_patch(image, landmarks, SHARPNESS_BOX))


def teeth_share(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Share of the inner-mouth polygon (60-67) that looks like teeth: brighter than the lower
    face's median skin luma and at most half its saturation (0 for a closed mouth)."""
    pts = np.asarray(landmarks, np.float64)
    x0, y0, x1, y1 = mouth_box(pts, margin=0.6)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    hsv = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2HSV).astype(np.float32)
    inner = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(inner, [np.round(pts[60:68] - (x0, y0)).astype(np.int32)], 1)
    lips = np.zeros_like(inner)
    cv2.fillPoly(lips, [np.round(pts[48:60] - (x0, y0)).astype(np.int32)], 1)
    skin = (lips == 0)
    if inner.sum() < 3 or skin.sum() < 10:
        return 0.0
    value, sat = hsv[..., 2], hsv[..., 1]
    bright = value > np.median(value[skin])
    pale = sat < 0.5 * max(np.median(sat[skin]), 1.0)
    return float((bright & pale)[inner > 0].mean())


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) proxies of 68 landmarks: yaw where the nose tip (30) lies between the jaw
    ends (0 frontal, +-1 profile); pitch the nose-bridge-to-tip length (27-30) over the
    nose-to-chin length (30-8), centred on a frontal face's 0.55; roll the eye line's angle (rad)."""
    pts = np.asarray(landmarks, np.float64)
    axis = pts[16] - pts[0]
    yaw = 2.0 * float((pts[30] - pts[0]) @ axis) / max(float(axis @ axis), 1e-6) - 1.0
    pitch = np.linalg.norm(pts[30] - pts[27]) / (np.linalg.norm(pts[8] - pts[30]) + 1e-6) - 0.55
    eyes = pts[42:48].mean(0) - pts[36:42].mean(0)
    return np.array([yaw, pitch, np.arctan2(eyes[1], eyes[0])], np.float32)
