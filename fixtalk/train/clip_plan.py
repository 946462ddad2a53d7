"""Which frames of a scanned video become clips, and why the others do not.

Every frame of a video ends in exactly one :class:`Piece`: a clip to write (``reason`` None) or
footage dropped with a reason, so the kept and dropped seconds of a video add up to its length.
Per shot (:class:`fixtalk.train.face_scan.FaceScan`), in this order:

1. ``too_short``: the shot is shorter than ``min_seconds`` (and at least 2 frames);
2. ``several_faces``: two or more faces in ``several_faces_share`` of its detection frames;
3. clips are cut to the face track: stretches of the shot without a face (longer than
   ``max_gap`` seconds; shorter gaps are bridged, their landmarks interpolated) are dropped as
   ``no_face``, and a run of the track shorter than ``min_seconds`` as ``too_short``;
4. each run of the track is cut into clips of ``segment`` seconds (a remainder shorter than
   ``min_seconds`` joins the clip before it).

Frames after the end of the audio (more than ``AUDIO_SLACK``) are dropped as ``no_audio``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fixtalk.config import PrepareConfig
from fixtalk.train.data_format import FPS
from fixtalk.train.face_scan import FaceScan


#: Frames of video past the end of the audio that still count as the video's (their audio is
#: silence): the two streams of a file end within a frame or two of each other.
AUDIO_SLACK = 2


@dataclass
class Piece:
    """Frames ``start`` .. ``stop`` - 1 of one ``shot``: a clip (``reason`` None) or dropped."""

    start: int
    stop: int
    shot: int
    reason: str | None = None
    message: str = ""
    missing: float = 0.0  # share of a clip's frames whose landmarks are interpolated (bridged gaps)

    @property
    def seconds(self) -> float:
        return (self.stop - self.start) / FPS

    def span(self) -> str:
        return f"{self.start / FPS:.2f}-{self.stop / FPS:.2f} s"


def min_frames(cfg: PrepareConfig) -> int:
    """Frames of the shortest shot or clip kept (``min_seconds``, at least 2)."""
    return max(2, round(float(cfg.min_seconds) * FPS))


def segment_bounds(start: int, stop: int, cfg: PrepareConfig) -> list[tuple[int, int]]:
    """Clip ranges of ``segment`` seconds covering start..stop; a short remainder joins the last."""
    step = stop - start if cfg.segment <= 0 else max(2, round(float(cfg.segment) * FPS))
    bounds = [(a, min(stop, a + step)) for a in range(start, stop, step)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_frames(cfg):
        bounds[-2:] = [(bounds[-2][0], stop)]
    return bounds


def plan_shot(scan: FaceScan, start: int, stop: int, shot: int, cfg: PrepareConfig) -> list[Piece]:
    """The pieces of one shot (see the module docstring)."""
    whole = Piece(start, stop, shot)
    if stop - start < min_frames(cfg):
        whole.reason = "too_short"
        whole.message = (f"shot {shot} ({whole.span()}) lasts {whole.seconds:.2f} s, less than "
                         f"min_seconds={cfg.min_seconds}")
        return [whole]
    counts = scan.faces[start:stop]
    counts = counts[counts >= 0]
    several = float((counts >= 2).mean()) if len(counts) else 0.0
    if several >= float(cfg.several_faces_share):
        whole.reason = "several_faces"
        whole.message = (f"shot {shot} ({whole.span()}): two or more faces in {several:.0%} of the "
                         f"checked frames (up to {int(counts.max())}); a training clip needs one "
                         "speaker: crop the video to that person")
        return [whole]
    pieces = []
    for a, b, has_face in face_runs(scan.found, start, stop, cfg):
        run = Piece(a, b, shot)
        if not has_face:
            run.reason = "no_face"
            run.message = f"shot {shot} ({run.span()}): no face for {run.seconds:.2f} s"
        elif b - a < min_frames(cfg):
            run.reason = "too_short"
            run.message = (f"shot {shot} ({run.span()}): the face is tracked for {run.seconds:.2f} s "
                           f"only, less than min_seconds={cfg.min_seconds}")
        if run.reason:
            pieces.append(run)
            continue
        found = scan.found
        pieces += [Piece(s, e, shot, missing=float(1.0 - found[s:e].mean()))
                   for s, e in segment_bounds(a, b, cfg)]
    return pieces


def face_runs(found: np.ndarray, start: int, stop: int, cfg: PrepareConfig) -> list[tuple[int, int, bool]]:
    """start..stop split into (a, b, has_face) stretches: the face track, whose gaps of up to
    ``max_gap`` seconds are bridged, and the stretches without a face between its runs."""
    bridge = round(float(cfg.max_gap) * FPS)
    runs: list[list[int]] = []
    for t in np.nonzero(found[start:stop])[0] + start:
        if runs and t - runs[-1][1] <= bridge:
            runs[-1][1] = int(t) + 1
        else:
            runs.append([int(t), int(t) + 1])
    out, at = [], start
    for a, b in runs:
        if a > at:
            out.append((at, a, False))
        out.append((a, b, True))
        at = b
    if at < stop:
        out.append((at, stop, False))
    return out


def plan_pieces(scan: FaceScan, audio_frames: int, cfg: PrepareConfig) -> list[Piece]:
    """Every frame of the video in one piece, in frame order."""
    usable = min(len(scan), int(audio_frames))
    if len(scan) - usable <= AUDIO_SLACK:  # resampling to 25 fps rounds the video's end
        usable = len(scan)
    pieces = []
    for shot, (a, b) in enumerate(scan.shot_ranges(usable)):
        pieces += plan_shot(scan, a, b, shot, cfg)
    if usable < len(scan):
        tail = Piece(usable, len(scan), -1, "no_audio")
        tail.message = f"the audio ends at {usable / FPS:.2f} s, the video at {len(scan) / FPS:.2f} s"
        pieces.append(tail)
    return pieces


def fill_missing(landmarks: np.ndarray) -> np.ndarray:
    """(n, 68, 2) landmarks with NaN frames linearly interpolated from the frames around them."""
    lms = np.asarray(landmarks, np.float64)
    have = np.isfinite(lms[:, 0, 0])
    if not have.any():
        raise ValueError("no face found in any frame")
    idx = np.nonzero(have)[0]
    t = np.arange(len(lms))
    flat = lms[idx].reshape(len(idx), -1)
    filled = np.stack([np.interp(t, idx, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return filled.reshape(lms.shape)
