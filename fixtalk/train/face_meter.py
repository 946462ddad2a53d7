"""Face measurements on rendered and driving crops for the held-out evaluation
(:mod:`fixtalk.train.evaluate`): dlib landmarks fitted independently of the detector's box
scale (:func:`fixtalk.measure.faces.fit_landmarks`), mouth opening, head roll and a yaw proxy."""
from __future__ import annotations

import numpy as np


class FaceMeter:
    """dlib landmarks / embeddings of (rendered) crops, fitted with :func:`fixtalk.measure.faces.fit_landmarks`
    (independent of the detector's box scale). A frame is detected (``detect``) or, when the head is
    known to stay put or the detector misses it, fitted in the box of the last frame's landmarks."""

    def __init__(self) -> None:
        from fixtalk.measure import faces

        self.faces = faces
        self.box: tuple[float, float, float, float] | None = None
        self.detected = 0
        self.measured = 0

    def face(self, frame: np.ndarray, detect: bool = True):
        self.measured += 1
        box = self.box
        if detect or box is None:
            found = self.faces.detect_faces(frame, upsample=1)
            if found:
                self.detected += 1
                box = found[0].box
        if box is None:
            return None
        lm = self.faces.fit_landmarks(frame, box)
        self.box = self.faces.box_from_landmarks(lm)
        return self.faces.Face(tuple(int(round(v)) for v in self.box), lm, 0.0)

    def landmarks(self, frames: np.ndarray, detect: bool = True) -> np.ndarray:
        """(N, 68, 2); NaN rows where no face was ever found."""
        out = np.full((len(frames), 68, 2), np.nan)
        for i, f in enumerate(frames):
            face = self.face(f, detect)
            if face is not None:
                out[i] = face.landmarks
        return out

    def embedding(self, frame: np.ndarray) -> np.ndarray | None:
        """dlib's identity embedding of the detected face (as the QC stage computes it)."""
        found = self.faces.detect_faces(frame, upsample=1)
        return self.faces.face_embedding(frame, found[0]) if found else None


def mouth_track(lms: np.ndarray) -> np.ndarray:
    from fixtalk.measure.faces import mouth_opening

    return np.array([mouth_opening(lm) if np.isfinite(lm).all() else np.nan for lm in lms])


def head_angles(lms: np.ndarray) -> dict[str, np.ndarray]:
    """roll (deg, eye line), yaw proxy (nose tip 30 vs jaw centre 0/16, over jaw width)."""
    eye_l, eye_r = lms[:, 36:42].mean(1), lms[:, 42:48].mean(1)
    d = eye_r - eye_l
    roll = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    jaw_mid = (lms[:, 0] + lms[:, 16]) / 2
    width = np.linalg.norm(lms[:, 16] - lms[:, 0], axis=1)
    # the yaw offset is measured along the eye line so roll does not leak into it
    u = d / np.linalg.norm(d, axis=1, keepdims=True)
    yaw = np.einsum("nd,nd->n", lms[:, 30] - jaw_mid, u) / width
    return {"roll": roll, "yaw": yaw}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    from fixtalk.measure.lipsync import pearson as _p

    keep = np.isfinite(a) & np.isfinite(b)
    return _p(np.asarray(a)[keep], np.asarray(b)[keep])
