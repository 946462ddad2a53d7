"""Line (e) of the held-out evaluation (:mod:`fixtalk.train.evaluate`): real head motion.

The held-out portrait (the first held-out clip's source frame) driven, pose only, by pose videos
of *another* face that move like real heads (:mod:`fixtalk.train.real_head_driver`: yaw to +-30
degrees, fast nods, roll, a shift with the turn, a talking mouth, blinks and per-frame jitter),
read as the pipeline reads a pose video (``motion.pose_track`` and ``motion.shift_stitching``,
:func:`fixtalk.pose_track.drive_pose`), shift put back on the render. Figures
(:mod:`fixtalk.train.pose_fidelity`, pooled over the drivers): face presence, identity against
the portrait beside the still render's, the non-rigid shape error, and how the render's head
yaw and roll follow the driver's. The same drivers read as EDTalk reads them
(``mode="frames"``) are reported beside it.

The driver face is the synthetic set's training portrait (the astronaut), the only other face
that ships with the packages: a different person from the held-out portrait, as in real use.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from fixtalk.config import PoseTrack, ShiftStitching
from fixtalk.train.data_format import Clip
from fixtalk.train.real_head_driver import RealHeadMotion, real_head_driver

DRIVER_FACE = "astronaut"


def drive_and_measure(renderer, source: np.ndarray, source_lm: np.ndarray, drivers: list[np.ndarray],
                      track: PoseTrack, stitching: ShiftStitching = ShiftStitching(), stride: int = 2) -> dict:
    """The source driven by each driver in turn (pose only); figures of every ``stride``-th
    frame, averaged over the drivers (``csim_min``: the lowest of any frame)."""
    import torch

    from fixtalk.pose_track import drive_pose
    from fixtalk.shift_stitching import shift_heads
    from fixtalk.train.face_meter import FaceMeter
    from fixtalk.train.pose_fidelity import measure

    state = renderer.source(source)
    still = next(iter(renderer.render(state, state.alpha_lip)))[0]
    per_driver = []
    for frames in drivers:
        lm = FaceMeter().landmarks(frames)
        pose, head = drive_pose(renderer, frames, lm, source, source_lm, track, stitching)
        out = np.concatenate(list(renderer.render(state, state.alpha_lip.expand(len(frames), -1),
                                                  torch.from_numpy(pose))))
        out = out if head is None else shift_heads(out, source_lm, head)
        per_driver.append(measure(out[::stride], source, still, lm[::stride]).as_dict())
    fig = {k: float(np.mean([d[k] for d in per_driver])) for k in per_driver[0]}
    fig["csim_min"] = float(min(d["csim_min"] for d in per_driver))
    fig["per_driver"] = per_driver
    return fig


def eval_real_motion(renderer, clip: Clip, frames: int = 100, seeds: tuple[int, ...] = (1, 2),
                     track: PoseTrack = PoseTrack(), stitching: ShiftStitching = ShiftStitching(),
                     stride: int = 2) -> dict:
    """(e): figures with ``track`` (the pipeline's policy) and, beside them, EDTalk's read-out
    (``frames`` key)."""
    from fixtalk.train.synthetic import load_portrait

    size = int(clip.frames.shape[1])
    face = load_portrait(DRIVER_FACE)
    drivers = [real_head_driver(face, frames, size, seed=s, motion=RealHeadMotion())[0] for s in seeds]
    source, source_lm = np.array(clip.frames[0]), np.asarray(clip.landmarks[0], np.float64)
    fig = drive_and_measure(renderer, source, source_lm, drivers, track, stitching, stride)
    fig["mode"] = track.mode
    fig["frames_mode"] = drive_and_measure(renderer, source, source_lm, drivers,
                                           replace(track, mode="frames"), stitching, stride)
    fig["drivers"] = f"{DRIVER_FACE}, seeds {list(seeds)}, {frames} frames each"
    return fig
