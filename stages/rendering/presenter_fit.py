"""A presenter's footage as fitting data (:mod:`fixtalk.footage_fit`): the tracked frames of a
``presenter_video`` (or a dub's ``source_video``) resampled to 25 fps, cut to the model crop with
the track's smoothed transforms, with their landmarks and the footage's own speech.

Only runs of usable frames within one shot are kept (:mod:`stages.face.track`); the last
``holdout`` share of the footage is left out (to measure the fit on frames it never saw); at most
``max_frames`` frames are used (the first runs first).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fixtalk.footage_fit import FootageSegment
from stages.base import ClipError
from stages.face.alignment import transform_points, warp_to_crop
from stages.face.track import FaceTrack
from stages.media.av import MediaError, decode_audio
from stages.media.footage import footage_frames

SAMPLES_PER_FRAME = 640


def sample_plan(track: FaceTrack, holdout: float, max_frames: int) -> list[np.ndarray]:
    """Runs of footage frame indices, one per 25 fps time step (see the module docstring)."""
    seconds = len(track) / track.fps * (1.0 - float(holdout))
    steps = np.arange(int(seconds * 25))
    index = np.minimum(np.round(steps * track.fps / 25.0).astype(int), len(track) - 1)
    ok = track.usable[index]
    runs, start = [], None
    for k in range(len(index) + 1):
        inside = k < len(index) and ok[k] and (start is None or track.shot[index[k]] == track.shot[index[start]])
        if start is not None and not inside:
            runs.append(steps[start:k])
            start = None
        if start is None and k < len(index) and ok[k]:
            start = k
    kept, total = [], 0
    for run in runs:
        if total >= max_frames:
            break
        run = run[: max_frames - total]
        kept.append(run)
        total += len(run)
    return kept


def footage_segments(path: Any, rate: str, track: FaceTrack, has_audio: bool, holdout: float,
                     max_frames: int, field: str) -> list[FootageSegment]:
    """The fitting segments of a footage (see the module docstring)."""
    plan = sample_plan(track, holdout, int(max_frames))
    if not plan:
        raise ClipError("the presenter's face is not usable in any frame of the footage; give "
                        "footage where the face is visible and frontal", field=field,
                        error_type="NoFace")
    fps = float(Fraction(rate))
    wanted = {int(round(k * fps / 25.0)): None for run in plan for k in run}
    seen = 0
    for chunk in footage_frames(path, rate, field=field):
        for i in range(seen, seen + len(chunk)):
            if i in wanted:
                i_c = min(i, len(track) - 1)
                wanted[i] = warp_to_crop(chunk[i - seen], track.matrices[i_c], track.size)
        seen += len(chunk)
    audio = None
    if has_audio:
        try:
            audio = decode_audio(Path(str(path)), 16000)
        except MediaError:
            audio = None  # footage with a broken sound track still fits the decoder
    segments = []
    for run in plan:
        index = [min(int(round(k * fps / 25.0)), len(track) - 1) for k in run]
        if any(wanted.get(i) is None for i in index):
            continue
        frames = np.stack([wanted[i] for i in index])
        lms = np.stack([transform_points(track.matrices[i], track.landmarks[i]) for i in index])
        sound = None
        if audio is not None:
            a, b = int(run[0]) * SAMPLES_PER_FRAME, (int(run[-1]) + 1) * SAMPLES_PER_FRAME
            sound = np.pad(audio[a:b], (0, max(0, b - a - len(audio[a:b])))).astype(np.float32)
        segments.append(FootageSegment(frames, lms.astype(np.float32), sound))
    return segments
