"""Pose-track conditioning: what of a pose video's head motion reaches the generator.

EDTalk/FixTalk read the pose weights alpha_pose of each driving frame with the motion encoder E
and the pose bank (the FDM's pose directions), and render the source with them. With a driver
of *another* person this assumes that E's pose weights carry the head pose only. For the
shipped default model (one training face, adapted to the portrait) they do not: measured on
pose videos of another face that move like real heads (docs/model_card.md, "Real head motion"),
the driver's pose weights sit far from the portrait's own even where both look straight ahead
(the other face's geometry is read as pose), so the render is stretched and sheared; turns
beyond the synthetic training range (yaw about +-16 degrees) and landmark jitter add to it.

The policy (``motion.pose_track``, :class:`fixtalk.config.PoseTrack`) drives the pose bank
with the *portrait's own* head instead (``mode="rigid"``, default):

1. the driver's rigid head motion p_t = (yaw, pitch, roll, log scale, tx, ty) is fitted to its
   landmarks (:func:`fixtalk.shift_stitching.fit_head_motion`, the pseudo-depth head model);
2. :func:`condition`: it is smoothed over ``smoothing_sigma`` frames (real landmark tracks
   jitter), its angles scaled by ``pose_scale`` and softly bounded to what the model was trained
   and adapted on (``max_yaw``, ``max_pitch``, ``max_roll``, ``max_log_scale``:
   b * tanh(x / b), so a turn beyond the bound still reads as a turn in the same direction);
3. :func:`rigid_pose_frames`: the portrait crop I_s is turned, tilted and scaled in place by the
   conditioned motion with the synthetic warp (:func:`fixtalk.train.face_warp.render_head`),
   the frames the adaptation taught the model; E reads alpha_pose off them. No pixel of the
   driver, so none of its identity, mouth, blinks or expression, reaches the generator.
4. the shift (tx, ty) is put back rigidly on the render (:mod:`fixtalk.shift_stitching`).

``mode="relative"`` keeps the driver's own pose weights but relative to the driver
(alpha^s_pose + pose_scale (alpha^d_pose,t - median_t alpha^d_pose)), FOMM's relative motion
transfer; ``mode="frames"`` is EDTalk's absolute read-out (the behaviour before this policy).
"""
from __future__ import annotations

import numpy as np

from fixtalk.config import PoseTrack, ShiftStitching

MODES = ("rigid", "relative", "frames")


def bounds(cfg: PoseTrack) -> np.ndarray:
    """Soft bounds of the six head-motion columns (angles in degrees, log scale, shift: none)."""
    return np.array([cfg.max_yaw, cfg.max_pitch, cfg.max_roll, cfg.max_log_scale, np.inf, np.inf])


def condition(head: np.ndarray, cfg: PoseTrack) -> np.ndarray:
    """The fitted head motion (N, 6) smoothed over time, its angles and scale times
    ``pose_scale``, each column softly bounded (b tanh(x / b)); shifts are smoothed only."""
    from scipy.ndimage import gaussian_filter1d

    out = np.asarray(head, np.float64).copy()
    if cfg.smoothing_sigma > 0 and len(out) > 1:
        out = gaussian_filter1d(out, float(cfg.smoothing_sigma), axis=0, mode="nearest")
    out[:, :4] *= float(cfg.pose_scale)
    b = bounds(cfg)
    finite = np.isfinite(b)
    out[:, finite] = b[finite] * np.tanh(out[:, finite] / b[finite])
    return out


def rigid_pose_frames(crop: np.ndarray, landmarks: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The portrait ``crop`` (S, S, 3) uint8 with its 68 ``landmarks`` (crop pixels) turned,
    tilted and scaled in place by each row of ``head`` (N, 6): (N, S, S, 3) uint8. The shift
    columns are ignored (the head stays where the portrait has it)."""
    import cv2

    from fixtalk.shift_stitching import as_motion
    from fixtalk.train.face_warp import render_head

    size = int(crop.shape[0])
    base = cv2.resize(np.ascontiguousarray(crop), (2 * size, 2 * size), interpolation=cv2.INTER_CUBIC)
    lm = np.asarray(landmarks, np.float64)
    return np.stack([render_head(base, lm, as_motion(p, shift=False), size)[0] for p in np.asarray(head)])


def rigid_pose_weights(renderer, crop: np.ndarray, landmarks: np.ndarray, head: np.ndarray,
                       chunk: int = 64) -> np.ndarray:
    """alpha_pose (N, pose_dim) of the portrait moved by the conditioned ``head`` (N, 6), read by
    the renderer's encoder (:meth:`fixtalk.inference.ClipRenderer.motion_weights`)."""
    parts = []
    for i in range(0, len(head), chunk):
        frames = rigid_pose_frames(crop, landmarks, head[i:i + chunk])
        parts.append(renderer.motion_weights(frames)["pose"].detach().float().cpu().numpy())
    return np.concatenate(parts).astype(np.float32)


def relative_pose_weights(driver_pose: np.ndarray, source_pose: np.ndarray, cfg: PoseTrack) -> np.ndarray:
    """alpha^s_pose + pose_scale (alpha^d_pose,t - median_t alpha^d_pose), smoothed over
    ``smoothing_sigma`` frames (``mode="relative"``)."""
    from scipy.ndimage import gaussian_filter1d

    d = np.asarray(driver_pose, np.float64)
    delta = d - np.median(d, axis=0, keepdims=True)
    if cfg.smoothing_sigma > 0 and len(d) > 1:
        delta = gaussian_filter1d(delta, float(cfg.smoothing_sigma), axis=0, mode="nearest")
    return (np.asarray(source_pose, np.float64).reshape(1, -1) + cfg.pose_scale * delta).astype(np.float32)


def video_head(landmarks: np.ndarray, track: PoseTrack, stitching: ShiftStitching) -> np.ndarray:
    """The head motion (N, 6) of a pose video's landmarks (N, 68, 2; NaN rows = no face) as the
    pipeline uses it: fitted relative to the video's median (or first frame, ``stitching.reference``),
    then conditioned (:func:`condition`) in ``rigid`` mode, smoothed by the stitching's
    ``smoothing_sigma`` otherwise. Raises ValueError when no frame has a face."""
    from fixtalk.shift_stitching import fit_head_motion

    rigid = track.mode == "rigid"
    head = fit_head_motion(landmarks, 0.0 if rigid else stitching.smoothing_sigma,
                           reference=0 if stitching.reference == "first" else None)
    return condition(head, track) if rigid else head


def drive_pose(renderer, frames: np.ndarray, landmarks: np.ndarray, crop: np.ndarray,
               crop_landmarks: np.ndarray, track: PoseTrack = PoseTrack(),
               stitching: ShiftStitching = ShiftStitching()) -> tuple[np.ndarray, np.ndarray | None]:
    """(alpha_pose (N, pose_dim), head motion (N, 6) whose shift goes back on the render, or None)
    of in-memory driving ``frames`` (N, S, S, 3) with their ``landmarks``, for the portrait
    ``crop`` with its ``crop_landmarks``: what ``stages.motion`` writes for a pose video."""
    from fixtalk.shift_stitching import stabilise

    if track.mode == "frames" and not stitching.enabled:
        return renderer.motion_weights(frames)["pose"].float().cpu().numpy(), None
    head = video_head(landmarks, track, stitching)
    if track.mode == "rigid":
        pose = rigid_pose_weights(renderer, crop, crop_landmarks, head)
    else:
        read = stabilise(frames, landmarks, head) if stitching.enabled else frames
        pose = renderer.motion_weights(read)["pose"].float().cpu().numpy()
        if track.mode == "relative":
            own = renderer.motion_weights(crop[None])["pose"].float().cpu().numpy()
            pose = relative_pose_weights(pose, own, track)
    return pose, (head if stitching.enabled else None)
