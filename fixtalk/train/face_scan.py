"""Pass one of data preparation: shots, face counts and 68 landmarks on every frame of a video.

For frames ``F_0 .. F_{N-1}`` (25 fps):

* **shots**: ``F_t`` starts a new shot when its thumbnail differs from ``F_{t-1}``'s by more
  than ``scene_cut`` (:mod:`fixtalk.measure.shots`, as the footage face tracking does);
* **detection** (dlib HOG on a copy scaled to ``detect_max_side``, upsampled once) on every
  ``detect_every``-th frame of a shot, at its first frame and whenever no face is being
  followed; the faces counted there (those at least ``minor_face_area`` of the largest one's box)
  tell a shot with several people apart. The face followed is the one nearest to the previous
  frame's, else the largest;
* **landmarks** on the other frames are fitted in the box of the previous frame's landmarks
  (:func:`fixtalk.measure.faces.fit_landmarks`, one refit), at full resolution.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from fixtalk.config import PrepareConfig
from fixtalk.measure.faces import box_from_landmarks, detect_faces, fit_landmarks, follow_face
from fixtalk.measure.shots import is_cut, thumbnail


@dataclass
class FaceScan:
    """``landmarks`` (N, 68, 2) frame pixels, NaN where no face; ``faces`` (N,) faces counted on
    detection frames (-1 on the others); ``shots`` (N,) shot index of each frame."""

    landmarks: np.ndarray
    faces: np.ndarray
    shots: np.ndarray

    def __len__(self) -> int:
        return len(self.shots)

    @property
    def found(self) -> np.ndarray:
        """(N,) bool: a face was followed in the frame."""
        return np.isfinite(self.landmarks[:, 0, 0])

    def shot_ranges(self, stop: int | None = None) -> list[tuple[int, int]]:
        """(start, stop) frame range of each shot, cut at frame ``stop``."""
        shots = self.shots[:stop]
        edges = [0, *(np.nonzero(np.diff(shots))[0] + 1).tolist(), len(shots)]
        return [(a, b) for a, b in pairwise(edges) if b > a]


def detect(frame: np.ndarray, cfg: PrepareConfig) -> list[np.ndarray]:
    """Landmarks (full-resolution pixels) of the faces counted in ``frame``, largest first."""
    import cv2

    h, w = frame.shape[:2]
    k = min(1.0, float(cfg.detect_max_side) / max(h, w))
    small = cv2.resize(frame, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA) if k < 1 else frame
    faces = detect_faces(small, upsample=1)
    if not faces:
        return []
    counted = [f for f in faces if f.area >= float(cfg.minor_face_area) * faces[0].area]
    return [f.landmarks / k for f in counted]


def scan_frames(frames: Iterable[np.ndarray], cfg: PrepareConfig) -> FaceScan:
    """Shots, face counts and landmarks of every frame (see the module docstring)."""
    every = max(1, int(cfg.detect_every))
    landmarks, faces, shots = [], [], []
    prev_thumb, pts, shot, since = None, None, -1, 0
    for frame in frames:
        thumb = thumbnail(frame)
        if is_cut(thumb, prev_thumb, cfg.scene_cut):
            shot, pts, since = shot + 1, None, 0
        prev_thumb = thumb
        count = -1
        if pts is None or since % every == 0:
            found = detect(frame, cfg)
            count = len(found)
            pts = follow_face(found, pts)
        if pts is not None:  # full-resolution fit in the face's own box
            pts = fit_landmarks(frame, box_from_landmarks(pts), refits=1, jitter=False)
        landmarks.append(pts if pts is not None else np.full((68, 2), np.nan))
        faces.append(count)
        shots.append(shot)
        since += 1
    return FaceScan(np.asarray(landmarks, np.float64).reshape(-1, 68, 2),
                    np.asarray(faces, np.int16), np.asarray(shots, np.int32))
