"""How faithfully a render keeps the face's shape while its head follows a pose video.

Figures of a clip rendered from one source portrait with the head motion of a driving video
(:func:`measure`), on the model's crops:

* ``face_presence``: share of frames where dlib's detector finds exactly one face (the QC
  stage's ``face_presence``; a stretched or sheared face is not found);
* ``csim_mean`` / ``csim_min``: cosine similarity of dlib's identity embedding of each frame to
  that of the source portrait (the QC identity line), beside ``csim_still``: the same for the
  *still render* (the source driven by its own weights, what a clip without a pose video shows);
* ``shape_error``: the non-rigid part of the face's motion. The still render's rigid dlib-68 points
  (:data:`fixtalk.shift_stitching.RIGID_POINTS`: jaw, brows, nose, eye corners) are moved by the
  best head motion of the pseudo-depth head model (:func:`fixtalk.shift_stitching.fit_one`: yaw,
  pitch, roll, scale, shift) onto each frame's; the RMS residual, over the inter-ocular distance,
  is what no head pose explains (stretch, shear, sliding eyes or nose). ``shape_error_p90`` is
  its 90th percentile over frames. ``similarity_error``: the same after a 2-D similarity only;
* ``yaw_corr`` / ``yaw_gain``, ``roll_corr`` / ``roll_gain``: Pearson correlation and slope of
  the render's head angles (:func:`fixtalk.train.face_meter.head_angles`) against the driver's
  (gain 1 = the driver's full motion).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

UPSCALE_TO = 256  # dlib's detector misses faces in 64-128 px crops: measure on a 256-px upscale


@dataclass
class PoseFidelity:
    face_presence: float
    csim_still: float
    csim_mean: float
    csim_min: float
    shape_error: float
    shape_error_p90: float
    similarity_error: float
    yaw_corr: float
    yaw_gain: float
    roll_corr: float
    roll_gain: float
    frames: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def line(self) -> str:
        return (f"presence {self.face_presence:.2f}  csim {self.csim_mean:.3f} (min {self.csim_min:.3f}; "
                f"still {self.csim_still:.3f})  "
                f"shape {self.shape_error:.3f} (p90 {self.shape_error_p90:.3f}, sim {self.similarity_error:.3f})  "
                f"yaw {self.yaw_corr:.2f}/{self.yaw_gain:.2f}  roll {self.roll_corr:.2f}/{self.roll_gain:.2f}")


def _upscaled(frames: np.ndarray) -> tuple[np.ndarray, float]:
    import cv2

    k = max(1.0, UPSCALE_TO / frames.shape[1])
    if k == 1.0:
        return frames, 1.0
    side = int(round(frames.shape[1] * k))
    return np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC) for f in frames]), k


def rigid_residuals(reference: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, RMS residual / inter-ocular distance of the rigid points of ``landmarks``
    (N, 68, 2) after the best head-model motion (first) and the best similarity (second) of
    ``reference`` (68, 2). NaN for frames without landmarks."""
    from fixtalk.measure.identity import similarity_transform
    from fixtalk.shift_stitching import RIGID_POINTS, as_motion, fit_one
    from fixtalk.train import face_warp

    ref = np.asarray(reference, np.float64)
    iod = face_warp._head_frame(ref)[1]
    head, sim = np.full(len(landmarks), np.nan), np.full(len(landmarks), np.nan)
    for i, lm in enumerate(np.asarray(landmarks, np.float64)):
        if not np.isfinite(lm).all():
            continue
        p = fit_one(ref, lm)
        moved = face_warp.head_transform(ref[RIGID_POINTS], ref, as_motion(p),
                                         depth=face_warp._DEPTH[RIGID_POINTS])
        head[i] = np.sqrt(((moved - lm[RIGID_POINTS]) ** 2).sum(1).mean()) / iod
        m = similarity_transform(ref[RIGID_POINTS], lm[RIGID_POINTS])
        placed = ref[RIGID_POINTS] @ m[:, :2].T + m[:, 2]
        sim[i] = np.sqrt(((placed - lm[RIGID_POINTS]) ** 2).sum(1).mean()) / iod
    return head, sim


def measure(renders: np.ndarray, source: np.ndarray, still: np.ndarray,
            driver_landmarks: np.ndarray) -> PoseFidelity:
    """Figures of the module docstring: ``renders`` (N, S, S, 3) uint8 of the ``source`` portrait
    (S, S, 3) driven by a video whose frames had ``driver_landmarks`` (N, 68, 2, any pixel
    scale); ``still`` (S, S, 3): the source's still render."""
    from fixtalk.measure.faces import detect_faces, face_embedding, fit_landmarks
    from fixtalk.measure.identity import cosine
    from fixtalk.train.face_meter import head_angles, pearson
    from fixtalk.train.pose_probe import slope

    big, _ = _upscaled(np.asarray(renders))
    (source_big, still_big), _ = _upscaled(np.stack([source, still]))
    found = [detect_faces(img, upsample=1) for img in (source_big, still_big)]
    if not (found[0] and found[1]):
        raise ValueError("no face found in the source portrait or its still render")
    ref_emb = face_embedding(source_big, found[0][0])
    csim_still = cosine(ref_emb, face_embedding(still_big, found[1][0]))
    ref_lm = fit_landmarks(still_big, found[1][0].box)
    counts, csim = [], []
    lms = np.full((len(big), 68, 2), np.nan)
    for i, frame in enumerate(big):
        faces = detect_faces(frame, upsample=1)
        counts.append(len(faces))
        if faces:
            csim.append(cosine(ref_emb, face_embedding(frame, faces[0])))
            lms[i] = fit_landmarks(frame, faces[0].box)
    head_err, sim_err = rigid_residuals(ref_lm, lms)
    a_out, a_drv = head_angles(lms), head_angles(np.asarray(driver_landmarks, np.float64))
    csim_arr = np.asarray(csim) if csim else np.array([np.nan])
    return PoseFidelity(
        face_presence=float(np.mean(np.asarray(counts) == 1)), csim_still=float(csim_still),
        csim_mean=float(np.nanmean(csim_arr)), csim_min=float(np.nanmin(csim_arr)),
        shape_error=float(np.nanmean(head_err)), shape_error_p90=float(np.nanpercentile(head_err, 90)),
        similarity_error=float(np.nanmean(sim_err)),
        yaw_corr=pearson(a_drv["yaw"], a_out["yaw"]), yaw_gain=slope(a_drv["yaw"], a_out["yaw"]),
        roll_corr=pearson(a_drv["roll"], a_out["roll"]), roll_gain=slope(a_drv["roll"], a_out["roll"]),
        frames=len(big))
