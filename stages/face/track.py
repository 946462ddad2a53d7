"""Face tracking through footage: where the presenter's face is in every frame, and whether that
frame can be dubbed.

For footage ``V`` with frames ``F_0 .. F_{T-1}`` at its own constant frame rate:

* **shots**: a frame whose 32x32 grey thumbnail differs from the previous one by more than
  ``track.scene_cut`` (mean absolute difference, 0-1) starts a new shot; a track never crosses a
  cut (neither the search box nor the smoothing);
* **detection** (dlib HOG, on a copy scaled to ``track.detect_max_side``) on every
  ``track.detect_every``-th frame, at the start of a shot and whenever the track was lost; the
  number of faces is counted there (two people in the footage is the row's error);
* **landmarks** on every frame: the 68-point shape fitted in the box of the previous frame's
  landmarks (:func:`fixtalk.measure.faces.box_from_landmarks`), refitted once in its own box; a fit that
  jumps by more than ``track.max_jump`` of the face's size, or that a detection frame cannot
  confirm, loses the track until the next detection;
* **usable frames**: a face at least ``track.min_face_px`` wide and not turned further than
  ``track.max_turn`` (yaw proxy: where the nose tip sits between the jaw ends, 0 frontal,
  1 profile). The others are passed through undubbed (status ``lost``, ``small``, ``turned``);
* **the landmarks** of each run of usable frames of one shot are smoothed over time by a Gaussian
  of ``track.smoothing_s`` seconds (a per-frame fit jitters by a pixel or two);
* **the crop transform** of each usable frame (:func:`stages.face.alignment.similarity_transform` of its
  landmarks) is smoothed over time within each run of usable frames of one shot: its four
  similarity parameters (log-scale, angle, centre) by a Gaussian of ``track.smoothing_s``
  seconds, so the pasted face neither jitters nor changes scale from frame to frame.

The result is saved as ``track.npz`` (:class:`FaceTrack`), cached by the footage's content and
the tracking options.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from fixtalk.measure.faces import box_from_landmarks, face_width, follow_face, landmarks_in_box
from fixtalk.measure.shots import is_cut, thumbnail
from stages.face.alignment import FaceFinder, similarity_transform

#: Frame status codes of a track.
OK, LOST, SMALL, TURNED = 0, 1, 2, 3
STATUS_NAMES = {OK: "ok", LOST: "lost", SMALL: "small", TURNED: "turned"}


class FootageFaceError(ValueError):
    """The footage cannot be dubbed at all: ``kind`` is NoFace or SeveralFaces."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class FaceTrack:
    """Per-frame tracking of one footage: ``landmarks`` (T, 68, 2) in frame pixels (NaN where no
    face), ``matrices`` (T, 2, 3) frame -> model-crop similarity (smoothed; NaN where not usable),
    ``status`` (T,) codes, ``shot`` (T,) shot index, ``faces`` (T,) faces counted on detection
    frames (-1 elsewhere), the frame ``width``/``height``, the crop ``size`` and ``fps``."""

    landmarks: np.ndarray
    matrices: np.ndarray
    status: np.ndarray
    shot: np.ndarray
    faces: np.ndarray
    width: int
    height: int
    size: int
    fps: float

    @property
    def usable(self) -> np.ndarray:
        return self.status == OK

    def __len__(self) -> int:
        return int(len(self.status))

    def counts(self) -> dict[str, int]:
        """Frames per status name."""
        return {name: int((self.status == code).sum()) for code, name in STATUS_NAMES.items()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")  # two actors may track one footage
        np.savez(tmp, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FaceTrack":
        with np.load(path) as data:
            values = {f.name: data[f.name] for f in fields(cls)}
        for name in ("width", "height", "size"):
            values[name] = int(values[name])
        values["fps"] = float(values["fps"])
        return cls(**values)


def turn_proxy(landmarks: np.ndarray) -> float:
    """Yaw proxy of 68 landmarks: 2 * (where the nose tip (30) lies between the jaw ends (0, 16)
    along their line) - 1; 0 for a frontal face, +-1 in profile."""
    pts = np.asarray(landmarks, np.float64)
    axis = pts[16] - pts[0]
    length = float(axis @ axis)
    if length < 1e-6:
        return 1.0
    return float(2.0 * ((pts[30] - pts[0]) @ axis) / length - 1.0)


class FaceTracker:
    """Tracks the one presenter through the frames of a footage (see the module docstring)."""

    def __init__(self, finder: FaceFinder, cfg, size: int, crop_scale: float, center_shift: float):
        self.finder, self.cfg, self.size = finder, cfg, int(size)
        self.crop_scale, self.center_shift = float(crop_scale), float(center_shift)

    def track(self, chunks: Iterable[np.ndarray], fps: float) -> FaceTrack:
        """Track every frame of ``chunks`` ((n, H, W, 3) uint8 arrays, in order)."""
        cfg = self.cfg
        landmarks, faces, shots = [], [], []
        prev_thumb, prev_pts, shot, since = None, None, -1, 0
        height = width = 0
        for chunk in chunks:
            for frame in chunk:
                height, width = frame.shape[:2]
                thumb = thumbnail(frame)
                if is_cut(thumb, prev_thumb, cfg.scene_cut):
                    shot, prev_pts, since = shot + 1, None, 0
                prev_thumb = thumb
                count = -1
                if prev_pts is None or since % max(1, int(cfg.detect_every)) == 0:
                    found = self._detect(frame)
                    count = len(found)
                    prev_pts = self._confirm(found, prev_pts)
                pts = self._fit(frame, prev_pts) if prev_pts is not None else None
                landmarks.append(pts if pts is not None else np.full((68, 2), np.nan))
                faces.append(count)
                shots.append(shot)
                prev_pts, since = pts, since + 1
        lms = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
        faces_arr = np.asarray(faces, np.int16)
        self._check_faces(lms, faces_arr)
        status = self._status(lms)
        matrices = self._smoothed_matrices(lms, status, np.asarray(shots), fps)
        return FaceTrack(lms, matrices, status, np.asarray(shots, np.int32), faces_arr,
                         int(width), int(height), self.size, float(fps))

    # -- per frame ---------------------------------------------------------------------------
    def _detect(self, frame: np.ndarray):
        h, w = frame.shape[:2]
        k = min(1.0, float(self.cfg.detect_max_side) / max(h, w))
        small = cv2.resize(frame, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA) if k < 1 else frame
        counted, _ = self.finder.split(self.finder.detect(small, 0))
        return [f.landmarks / k for f in counted]

    def _confirm(self, found: list[np.ndarray], prev: np.ndarray | None) -> np.ndarray | None:
        """The detection that continues the track (nearest to it), or the largest one."""
        return follow_face(found, prev)

    def _fit(self, frame: np.ndarray, prev: np.ndarray) -> np.ndarray | None:
        """Landmarks in the box of ``prev``, refitted once in their own box; None when the fit
        jumps away from ``prev`` (the face left or the fit failed)."""
        box = box_from_landmarks(prev)
        side = box[2] - box[0]
        h, w = frame.shape[:2]
        if side < 8 or box[2] < 0 or box[3] < 0 or box[0] > w or box[1] > h:
            return None
        x0, y0 = max(0, int(box[0] - side)), max(0, int(box[1] - side))
        x1, y1 = min(w, int(box[2] + side) + 1), min(h, int(box[3] + side) + 1)
        patch = np.ascontiguousarray(frame[y0:y1, x0:x1])
        off = np.array([x0, y0], np.float64)
        local = np.array([box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0])
        pts = landmarks_in_box(patch, tuple(local))
        pts = landmarks_in_box(patch, box_from_landmarks(pts)) + off
        size = max(face_width(prev), 1.0)
        if float(np.abs(pts.mean(0) - prev.mean(0)).max()) > self.cfg.max_jump * size:
            return None
        if abs(face_width(pts) / size - 1.0) > 2 * self.cfg.max_jump:
            return None
        return pts

    # -- whole track -------------------------------------------------------------------------
    def _check_faces(self, lms: np.ndarray, faces: np.ndarray) -> None:
        detected = faces[faces >= 0]
        if not np.isfinite(lms[:, 0, 0]).any():
            raise FootageFaceError(f"no face found in any of the {len(lms)} frames; give footage of "
                                   "one presenter whose face is visible", "NoFace")
        several = float((detected >= 2).mean()) if len(detected) else 0.0
        if several >= float(self.cfg.several_faces_share):
            raise FootageFaceError(
                f"two or more faces in {several:.0%} of the checked frames (at most "
                f"{max(2, int(detected.max()))} at once); dubbing needs footage of one presenter: "
                "crop the video to that person", "SeveralFaces")

    def _status(self, lms: np.ndarray) -> np.ndarray:
        status = np.full(len(lms), LOST, np.int8)
        for t, pts in enumerate(lms):
            if not np.isfinite(pts).all():
                continue
            if face_width(pts) < float(self.cfg.min_face_px):
                status[t] = SMALL
            elif abs(turn_proxy(pts)) > float(self.cfg.max_turn):
                status[t] = TURNED
            else:
                status[t] = OK
        return status

    def _smoothed_matrices(self, lms: np.ndarray, status: np.ndarray, shots: np.ndarray,
                           fps: float) -> np.ndarray:
        out = np.full((len(lms), 2, 3), np.nan)
        sigma = float(self.cfg.smoothing_s) * float(fps)
        for start, stop in usable_runs(status == OK, shots):
            if sigma > 0 and stop - start > 1:  # landmark jitter (the mask, the mouth's rest)
                lms[start:stop] = gaussian_filter1d(lms[start:stop], sigma, axis=0, mode="nearest")
            mats = [similarity_transform(lms[t], self.size, self.crop_scale, self.center_shift)
                    for t in range(start, stop)]
            params = np.stack([to_params(m) for m in mats])
            params[:, 1] = np.unwrap(params[:, 1])
            if sigma > 0 and stop - start > 1:
                params = gaussian_filter1d(params, sigma, axis=0, mode="nearest")
            out[start:stop] = np.stack([from_params(p) for p in params])
        return out


def usable_runs(usable: np.ndarray, shots: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each maximal run of usable frames within one shot."""
    runs, start = [], None
    for t in range(len(usable) + 1):
        inside = t < len(usable) and bool(usable[t]) and (start is None or shots[t] == shots[start])
        if start is not None and not inside:
            runs.append((start, t))
            start = None
        if start is None and t < len(usable) and usable[t]:
            start = t
    return runs


def to_params(matrix: np.ndarray) -> np.ndarray:
    """(log scale, angle, tx, ty) of a 2x3 similarity matrix."""
    a, b = float(matrix[0, 0]), float(matrix[1, 0])
    return np.array([np.log(np.hypot(a, b)), np.arctan2(b, a), matrix[0, 2], matrix[1, 2]])


def from_params(p: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix of (log scale, angle, tx, ty)."""
    s, th = np.exp(p[0]), p[1]
    return np.array([[s * np.cos(th), -s * np.sin(th), p[2]], [s * np.sin(th), s * np.cos(th), p[3]]])
