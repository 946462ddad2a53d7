"""Find the one face of a portrait and align it to the model's square crop.

Alignment is a similarity transform (rotation, uniform scale, translation) built from the eyes and
the mouth, in the manner of the FFHQ / LIA / EDTalk crops that frame the whole head: with
``e`` = eye-to-eye vector, ``m`` = eye-centre-to-mouth-centre vector, the crop is the square centred
at ``eye_centre + center_shift * m``, rotated so that the eyes are level, with half side
``crop_scale * 1.25 * max(|e|, 0.9 |m|)`` (``crop_scale = 1.6`` reproduces the FFHQ framing).

The transform is kept as a 2x3 matrix ``A`` mapping portrait pixels to crop pixels
(``crop = A @ [x, y, 1]``); paste-back uses its inverse.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fixtalk.measure.faces import Face, detect_faces, landmarks_in_box

FA_FILES = {"2DFAN-4": "2DFAN4-11f355bf06.pth.tar", "s3fd": "s3fd-619a316812.pth"}


class FaceError(ValueError):
    """Zero or several faces (``count`` says how many were found)."""

    def __init__(self, message: str, count: int):
        super().__init__(message)
        self.count = count


@dataclass
class Detection:
    """The chosen face in portrait coordinates plus what was set aside while choosing it."""

    face: Face
    angle: float = 0.0
    ignored: list[Face] = field(default_factory=list)


def similarity_transform(landmarks: np.ndarray, size: int, crop_scale: float = 1.6,
                         center_shift: float = 0.1) -> np.ndarray:
    """2x3 matrix mapping portrait pixels to the ``size`` x ``size`` aligned crop (see module doc)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    eye_l, eye_r = pts[36:42].mean(0), pts[42:48].mean(0)
    mouth = (pts[48] + pts[54]) / 2
    eye_c = (eye_l + eye_r) / 2
    e, m = eye_r - eye_l, mouth - eye_c
    x = e - np.array([-m[1], m[0]])  # eyes' direction averaged with the face's up-down axis
    x /= np.hypot(*x) + 1e-12
    x *= crop_scale * 1.25 * max(np.hypot(*e), 0.9 * np.hypot(*m))
    y = np.array([-x[1], x[0]])
    c = eye_c + center_shift * m
    src = np.float32([c - x - y, c + x - y, c - x + y])
    dst = np.float32([[0, 0], [size, 0], [0, size]])
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, size: int,
                 border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """Cut the aligned crop. Large reductions are pre-shrunk with area averaging (no aliasing);
    outside the picture, pixels are mirrored (``border``; ``cv2.BORDER_CONSTANT``: black)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        f = 2.0 * scale
        image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([1 / f, 1 / f, 1.0])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def face_view(matrix: np.ndarray, crop_size: int, size: int, context: float) -> np.ndarray:
    """2x3 matrix: portrait pixels -> a ``size`` x ``size`` view with the aligned crop of
    ``matrix`` (portrait -> ``crop_size`` crop) in its middle, ``context`` times wider: the face
    upright at any roll, at a size a detector likes, wherever it is in a picture of any size."""
    k = size / (crop_size * float(context))
    scale = np.array([[k, 0.0, size / 2 - k * crop_size / 2], [0.0, k, size / 2 - k * crop_size / 2]])
    return scale @ np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])


def transform_points(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def _rotation(shape: tuple[int, ...], angle: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Rotation by ``angle`` degrees about the centre into a canvas large enough to keep it all."""
    h, w = shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
    nw, nh = int(h * sin + w * cos + 0.5), int(h * cos + w * sin + 0.5)
    rot[0, 2] += nw / 2 - w / 2
    rot[1, 2] += nh / 2 - h / 2
    return rot, (nw, nh)


def face_alignment_cache() -> dict[str, Path]:
    """Where face-alignment keeps its weights (torch hub cache); nothing is downloaded here."""
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return {name: folder / fname for name, fname in FA_FILES.items()}


class FaceFinder:
    """Detect faces (dlib HOG by default, or face-alignment's S3FD + FAN when its weights are
    cached) and pick the portrait's one face."""

    def __init__(self, backend: str = "dlib", *, detect_max_side: int = 1600,
                 min_face_score: float = 0.3, minor_face_area: float = 0.25,
                 minor_face_score: float = 0.8, rotations: tuple[float, ...] = (30, -30, 60, -60),
                 device: str = "cpu"):
        if backend not in ("dlib", "face_alignment"):
            raise ValueError(f"unknown face backend {backend!r}; use dlib or face_alignment")
        self.backend = backend
        self.detect_max_side = int(detect_max_side)
        self.min_face_score = float(min_face_score)
        self.minor_face_area = float(minor_face_area)
        self.minor_face_score = float(minor_face_score)
        self.rotations = tuple(float(a) for a in rotations)
        self._fa = self._load_face_alignment(device) if backend == "face_alignment" else None

    @staticmethod
    def _load_face_alignment(device: str):
        missing = [str(p) for p in face_alignment_cache().values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                "face_crop.backend=face_alignment needs its weights in the torch hub cache; missing "
                + ", ".join(missing) + ". Copy them there from a machine that ran "
                "`python -c \"import face_alignment as f; f.FaceAlignment(f.LandmarksType.TWO_D, "
                "device='cpu')\"` (or set TORCH_HOME), or use face_crop.backend=dlib")
        import face_alignment

        return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device,
                                            flip_input=False, compile=False)

    # -- raw detection -----------------------------------------------------------------------
    def detect(self, rgb: np.ndarray, upsample: int = 0) -> list[Face]:
        """All faces with landmarks in ``rgb`` coordinates, largest first."""
        h, w = rgb.shape[:2]
        s = min(1.0, self.detect_max_side / max(h, w))
        small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else rgb
        faces = self._detect_fa(small) if self._fa is not None else detect_faces(small, upsample)
        if s < 1:
            faces = [Face(tuple(int(round(v / s)) for v in f.box), f.landmarks / s, f.score)
                     for f in faces]
        return faces

    def _detect_fa(self, rgb: np.ndarray) -> list[Face]:
        found = self._fa.get_landmarks_from_image(rgb, return_bboxes=True)
        landmarks, _, boxes = found if found is not None else (None, None, None)
        faces = []
        for pts, box in zip(landmarks or [], boxes or []):
            l, t, r, b = (int(round(v)) for v in box[:4])
            faces.append(Face((l, t, r, b), np.asarray(pts, np.float64)[:, :2], float(box[4])))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def refine(self, rgb: np.ndarray, face: Face) -> Face:
        """Landmarks recomputed at full resolution (dlib) for a face found on a reduced copy."""
        if self._fa is not None:
            return face
        return Face(face.box, landmarks_in_box(rgb, face.box), face.score)

    # -- choosing the one face ---------------------------------------------------------------
    def split(self, faces: list[Face]) -> tuple[list[Face], list[Face]]:
        """(counted faces, ignored faces): weak detections and small low-scoring faces beside a
        much larger one are ignored. dlib scores are SVM margins (real faces about 0.5-2.5)."""
        weak_floor = self.min_face_score if self._fa is None else 0.0
        strong = [f for f in faces if f.score >= weak_floor]
        ignored = [f for f in faces if f.score < weak_floor]
        if not strong:
            return [], ignored
        main = max(strong, key=lambda f: f.area)
        counted = [main]
        for f in strong:
            if f is main:
                continue
            minor = f.area < self.minor_face_area * main.area
            if minor and f.score < (self.minor_face_score if self._fa is None else 0.9):
                ignored.append(f)
            else:
                counted.append(f)
        return counted, ignored

    def find_one(self, rgb: np.ndarray) -> Detection:
        """The portrait's single face; :class:`FaceError` for zero or several."""
        for upsample in (0, 1) if self._fa is None else (0,):
            counted, ignored = self.split(self.detect(rgb, upsample))
            if counted:
                return self._one(rgb, counted, ignored, 0.0)
        for angle in self.rotations:
            rot, (nw, nh) = _rotation(rgb.shape, angle)
            turned = cv2.warpAffine(rgb, rot, (nw, nh), borderMode=cv2.BORDER_CONSTANT)
            counted, more = self.split(self.detect(turned, 0))
            if counted:
                back = cv2.invertAffineTransform(rot)
                faces = [self.refine(turned, f) for f in counted]
                faces = [Face(_box_of(transform_points(back, f.landmarks)),
                              transform_points(back, f.landmarks), f.score) for f in faces]
                return self._one(rgb, faces, ignored + more, angle, refined=True)
        note = f" ({len(ignored)} weak detection(s) ignored)" if ignored else ""
        raise FaceError(f"no face found{note}; expected a photo with one clearly visible, "
                        "roughly frontal face", 0)

    def _one(self, rgb: np.ndarray, counted: list[Face], ignored: list[Face], angle: float,
             refined: bool = False) -> Detection:
        if len(counted) > 1:
            boxes = ", ".join(str(tuple(f.box)) for f in counted)
            raise FaceError(f"{len(counted)} faces found (boxes {boxes}); expected exactly one "
                            "presenter: crop the picture to one person", len(counted))
        face = counted[0] if refined else self.refine(rgb, counted[0])
        return Detection(face=face, angle=angle, ignored=ignored)

    def largest(self, rgb: np.ndarray) -> Face | None:
        """The largest face (no counting), e.g. in a driving video frame."""
        for upsample in (0, 1) if self._fa is None else (0,):
            counted, _ = self.split(self.detect(rgb, upsample))
            if counted:
                return self.refine(rgb, counted[0])
        return None


def _box_of(pts: np.ndarray) -> tuple[int, int, int, int]:
    l, t = np.floor(pts.min(0)).astype(int)
    r, b = np.ceil(pts.max(0)).astype(int)
    return int(l), int(t), int(r), int(b)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
