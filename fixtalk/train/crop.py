"""Face landmarks (dlib 68 points) and the canonical training crop.

The canonical crop follows EDTalk's MEAD-M003 template proportions (see
shared/research/edtalk_architecture.md, 1.3): eyes at 44 % of the height, the mouth at 71 %, eye
centres 23 % of the width apart, so the face fills the lower two thirds with room above the brows.
A crop is the similarity transform that maps (left-eye centre, right-eye centre, mouth centre) of a
face onto those three template points. Training data (synthetic and prepared) use this crop; the
renderer's face_crop stage should align to the same template (``TEMPLATE_POINTS``).

The 68-point predictor is ``face_recognition_models``' iBUG 300-W model (non-commercial licence).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from fixtalk.geometry import umeyama

# (x, y) as fractions of the crop size: left-eye centre, right-eye centre, mouth centre.
TEMPLATE_POINTS = np.array([[0.383, 0.441], [0.617, 0.441], [0.5, 0.707]], dtype=np.float64)

LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
OUTER_LIP = slice(48, 60)
INNER_LIP = slice(60, 68)
JAW = slice(0, 17)

# Index permutation that maps the 68 landmarks of a face to those of its mirror image.
MIRROR_68 = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46]  # left eye <- right eye
    + [39, 38, 37, 36, 41, 40]  # right eye <- left eye
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lip
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lip
)


@lru_cache(maxsize=1)
def _dlib_models():
    import dlib
    import face_recognition_models as frm

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(frm.pose_predictor_model_location())


def _rgb_u8(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    return np.ascontiguousarray(np.clip(image[:, :, :3], 0, 255).astype(np.uint8))


def detect_landmarks(image: np.ndarray, upsample: int = 1) -> np.ndarray | None:
    """68 (x, y) landmarks of the best-scoring dlib face in an RGB uint8 image, or None."""
    detector, predictor = _dlib_models()
    rgb = _rgb_u8(image)
    rects, scores, _ = detector.run(rgb, upsample, 0.0)
    if len(rects) == 0:
        return None
    best = rects[int(np.argmax(scores))]
    shape = predictor(rgb, best)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def landmarks_in_box(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """68 landmarks for a known face box (left, top, right, bottom) without detection."""
    import dlib

    _, predictor = _dlib_models()
    shape = predictor(_rgb_u8(image), dlib.rectangle(*[int(round(v)) for v in box]))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def key_points(landmarks: np.ndarray) -> np.ndarray:
    """(3, 2): left-eye centre, right-eye centre, mouth centre (mean of the outer lip)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[LEFT_EYE].mean(0), lm[RIGHT_EYE].mean(0), lm[OUTER_LIP].mean(0)])


def crop_matrix(landmarks: np.ndarray, size: int, scale: float = 1.0,
                shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """2x3 similarity matrix mapping image pixels to the canonical ``size`` crop.

    ``scale`` > 1 zooms out (more context), ``shift`` moves the template by a fraction of the crop.
    """
    src = key_points(landmarks)
    centre = np.array([0.5, 0.5])
    dst = (TEMPLATE_POINTS - centre) / scale + centre + np.asarray(shift)
    dst = dst * size
    return umeyama(src, dst)


def apply_matrix(mat: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (..., 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ mat[:, :2].T + mat[:, 2]


def warp_crop(image: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
    """Resample ``image`` into the ``size`` crop given by ``mat`` (area-filtered when shrinking)."""
    import cv2

    zoom = float(np.sqrt(abs(np.linalg.det(mat[:, :2]))))
    src = image
    if zoom < 0.75:  # pre-blur against aliasing when the crop shrinks the image
        sigma = 0.5 / zoom
        src = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma * 0.6)
    return cv2.warpAffine(src, mat, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)
