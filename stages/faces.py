"""Offline face analysis shared by face crop, QC and data preparation.

Default backend: dlib (``dlib-bin``) HOG detector, the 68-point shape predictor and the 128-d
ResNet identity embedder, all shipped by ``face-recognition-models`` (no download). The 68-point
model was trained on iBUG 300-W, whose licence excludes commercial use (see docs/model_card.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass
class Face:
    """One detected face: box (left, top, right, bottom) in pixels, 68 landmarks (x, y)."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray  # (68, 2) float64
    score: float

    @property
    def area(self) -> int:
        l, t, r, b = self.box
        return max(0, r - l) * max(0, b - t)


@lru_cache(maxsize=1)
def _dlib_models():
    import dlib
    import face_recognition_models as frm

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_model_location())
    embedder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    return detector, predictor, embedder


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def detect_faces(image: np.ndarray, upsample: int = 1, min_score: float = 0.0) -> list[Face]:
    """All faces in an RGB (or grayscale) uint8 image, largest first, with 68 landmarks each."""
    import dlib

    detector, predictor, _ = _dlib_models()
    rgb = _as_rgb_uint8(image)
    rects, scores, _ = detector.run(rgb, upsample, min_score)
    faces = []
    for rect, score in zip(rects, scores):
        shape = predictor(rgb, rect)
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        faces.append(Face((rect.left(), rect.top(), rect.right(), rect.bottom()), pts, float(score)))
    faces.sort(key=lambda f: f.area, reverse=True)
    return faces


def landmarks_in_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks for a known face box (no detection), e.g. on an aligned crop."""
    import dlib

    _, predictor, _ = _dlib_models()
    rgb = _as_rgb_uint8(image)
    shape = predictor(rgb, dlib.rectangle(*[int(v) for v in box]))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def face_embedding(image: np.ndarray, face: Face, jitter: int = 0) -> np.ndarray:
    """dlib's 128-d identity embedding of ``face`` (Euclidean distance < 0.6 = same person)."""
    import dlib

    _, predictor, embedder = _dlib_models()
    rgb = _as_rgb_uint8(image)
    l, t, r, b = face.box
    shape = predictor(rgb, dlib.rectangle(int(l), int(t), int(r), int(b)))
    vec = embedder.compute_face_descriptor(rgb, shape, jitter)
    return np.asarray(vec, dtype=np.float64)


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap normalised by the mouth width (68-point indices 60-67 inner lip)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    gap = np.mean([np.linalg.norm(pts[61 + i] - pts[67 - i]) for i in range(3)])
    width = np.linalg.norm(pts[48] - pts[54]) + 1e-6
    return float(gap / width)
