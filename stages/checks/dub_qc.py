"""QC measures of a dub (rows with ``source_video``): how much of it was dubbed, whether the rest
of each frame is the footage's own, and whether its mouth is as alive as the presenter's own.

* ``dubbed_fraction``: frames dubbed / frames (frames whose face was lost, too small or turned
  away pass through; QC warns below ``qc.min_dubbed_fraction``);
* ``outside_psnr_mean`` / ``outside_psnr_min``: PSNR (dB) of the delivered frame against its
  footage frame over the pixels outside the lower-face composite mask
  (:func:`stages.face.mouth_rest.frame_mask`), on up to ``SAMPLES`` frames spread over the clip. Only
  the delivery encoding separates them (about 40 dB and more at the default quality); a low value
  means the picture outside the mouth changed (QC warns below ``qc.outside_psnr_warn``).
* ``mouth_motion_ratio``, ``mouth_sharpness_ratio``, ``mouth_change_ratio``: the dub's mouth
  against the footage's own (:mod:`fixtalk.measure.mouth_quality`): the standard deviation of
  the inner-lip gap over the eye distance in speech, the median variance of the Laplacian of the
  scale-normalised mouth box and the median frame-to-frame change in it, each dub / footage. The
  dub side is measured on ``PAIRS`` pairs of consecutive dubbed frames in the clip's speech; the
  footage side the same way on pairs of its usable frames where its presenter talks (its own
  audio outside pauses; every usable frame when it has no audio), within the footage's first
  ``FOOTAGE_SPAN_S`` seconds or the part the dub shows. Both sides get landmarks fitted on the
  frame itself, near the face track's, and mouth boxes placed by the track's eyes (so the head's
  motion does not count); frames where the head moves too fast to fit
  (:func:`fixtalk.measure.mouth_quality.steady`) are left out of both. ``mouth_open_std`` /
  ``footage_mouth_open_std`` are the two standard deviations. QC warns when the dub's mouth
  moves less than ``qc.mouth_motion_ratio_warn`` of the footage's.
* ``dub_thumbnail``: the footage frame and the dubbed frame side by side (``OUT/qc/<id>_dub.jpg``),
  for the report.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from fixtalk.measure import mouth_quality as mq
from fixtalk.measure.speech_pauses import speech_activity
from stages.face.mouth_rest import frame_mask
from stages.face.track import FaceTrack
from stages.media.av import decode_audio, first_stream, iter_video_frames, probe
from stages.media.footage import footage_frames

SAMPLES = 24
#: Pairs of consecutive frames measured per side for the mouth ratios (80 landmark fits in all).
PAIRS = 40
#: Landmark refits per measured frame: the track's landmarks are already close (2 predictor calls).
REFITS = 1
#: The footage's own mouth is measured within this many seconds (or the part the dub shows).
FOOTAGE_SPAN_S = 60.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two equally shaped pixel arrays (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) if a.size else 0.0
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def pair_starts(ok: np.ndarray, count: int = PAIRS) -> list[int]:
    """Up to ``count`` frames t, evenly spread, where ``ok[t]`` and ``ok[t + 1]``."""
    starts = np.flatnonzero(ok[:-1] & ok[1:])
    if starts.size <= count:
        return starts.tolist()
    return sorted(set(starts[np.linspace(0, starts.size - 1, count).round().astype(int)].tolist()))


def _frames(t0: list[int]) -> tuple[list[int], list[bool]]:
    """The frames of pairs starting at ``t0`` in order, and whether each follows the previous."""
    frames = sorted({t for s in t0 for t in (s, s + 1)})
    return frames, [k > 0 and frames[k - 1] == t - 1 for k, t in enumerate(frames)]


def _speech(samples: np.ndarray | None, fps: float, n: int) -> np.ndarray:
    if samples is None or not np.asarray(samples).size:
        return np.ones(n, bool)
    return speech_activity(samples, mq.SAMPLE_RATE, fps, n, min_pause_s=mq.SPEECH_PAUSE_S).speech


def _select(chunks: Iterator[np.ndarray], wanted: set[int], keep: set[int], kept: dict[int, np.ndarray]
            ) -> Iterator[np.ndarray]:
    """Frames whose index is in ``wanted``, in order; copies of those in ``keep`` into ``kept``.
    Stops decoding after the last frame of either."""
    seen, last = 0, max(wanted | keep, default=-1)
    for chunk in chunks:
        for j in range(seen, min(seen + len(chunk), last + 1)):
            if j in keep:
                kept[j] = chunk[j - seen].copy()
            if j in wanted:
                yield chunk[j - seen]
        seen += len(chunk)
        if seen > last:
            return


def _mouth(chunks: Iterator[np.ndarray], starts: list[int], align: Callable[[int], np.ndarray],
           box: mq.MouthBox | None, keep: set[int], kept: dict[int, np.ndarray]) -> dict[str, float]:
    """Clip figures of the mouth on the frame pairs at ``starts`` (``align(t)``: the track's
    landmarks of frame t), keeping copies of the frames ``keep`` on the way."""
    frames, follows = _frames(starts if box is not None else [])
    track = mq.measure_mouth(_select(chunks, set(frames), keep, kept), None, box,
                             align=[align(t) for t in frames], follows=follows, refits=REFITS)
    return mq.clip_figures(track, 25.0)  # no audio: the pairs are speech frames already


def _footage_audio(path: str, seconds: float) -> np.ndarray | None:
    if first_stream(probe(path), "audio") is None:
        return None
    return decode_audio(path, mq.SAMPLE_RATE, max_seconds=seconds)


def dub_metrics(row: dict[str, Any], clip: Path, qc_dir: Path, feather: float,
                samples: np.ndarray | None = None) -> dict[str, Any]:
    """The dub's QC columns (see the module docstring); ``samples``: the clip's 16 kHz audio
    (None: decoded here)."""
    record = np.load(row["dub_frames"])
    index, dubbed = record["footage_index"], record["dubbed"]
    n = len(index)
    out: dict[str, Any] = {"dubbed_fraction": round(float(dubbed.mean()) if n else 0.0, 4)}
    track = FaceTrack.load(row["footage_track"])
    rate = str(row["source_rate"])
    fps = float(Fraction(rate))
    picks = set(np.linspace(0, n - 1, min(SAMPLES, n)).round().astype(int).tolist()) if n else set()
    usable = track.usable & np.isfinite(track.landmarks).all(axis=(1, 2))
    steady = usable & mq.steady(track.landmarks)
    box = mq.mouth_box(track.landmarks[usable]) if usable.any() else None

    # the dub: pairs of dubbed frames in its speech
    if samples is None:
        samples = decode_audio(clip, mq.SAMPLE_RATE) if first_stream(probe(clip), "audio") else None
    starts = pair_starts(dubbed & steady[index] & _speech(samples, fps, n)) or pair_starts(dubbed)
    delivered: dict[int, np.ndarray] = {}
    dub = _mouth(iter_video_frames(clip), starts, lambda j: track.landmarks[index[j]], box, picks,
                 delivered)

    # the footage: pairs of its usable frames where its own presenter talks
    span = min(len(track), max(int(index.max()) + 2 if n else 0, int(FOOTAGE_SPAN_S * fps)))
    talking = np.zeros(len(track), bool)
    talking[:span] = _speech(_footage_audio(row["source_video"], span / fps), fps, span)
    talking &= steady & np.r_[track.shot[1:] == track.shot[:-1], False]
    sources: dict[int, np.ndarray] = {}
    footage = _mouth(footage_frames(row["source_video"], rate), pair_starts(talking),
                     lambda i: track.landmarks[i], box, {int(index[j]) for j in delivered}, sources)
    if box is not None:
        out.update({f"mouth_{name}": round(value, 4) if math.isfinite(value) else math.nan
                    for name, value in mq.ratios(dub, footage).items()})
        out["mouth_open_std"] = round(dub["opening_std_speech"], 4)
        out["footage_mouth_open_std"] = round(footage["opening_std_speech"], 4)

    values, shown = [], None
    for j, frame in sorted(delivered.items()):
        i = int(index[j])
        src = sources[i][: frame.shape[0], : frame.shape[1]]
        outside = np.ones(frame.shape[:2], bool)
        if dubbed[j]:
            (x0, y0, x1, y1), mask, _ = frame_mask(track.landmarks[i], track.matrices[i], track.size,
                                                   frame.shape, feather)
            outside[y0:y1, x0:x1] = mask <= 0.0
            shown = shown or (src, frame)
        values.append(psnr(frame[outside], src[outside]))
    finite = [v for v in values if math.isfinite(v)] or [99.0]
    out["outside_psnr_mean"] = round(float(np.mean(finite)), 2)
    out["outside_psnr_min"] = round(float(np.min(finite)), 2)
    if shown is not None:
        pair = np.concatenate(shown, axis=1)
        scale = min(1.0, 640 / pair.shape[1])
        image = Image.fromarray(pair)
        if scale < 1:
            image = image.resize((round(pair.shape[1] * scale), round(pair.shape[0] * scale)))
        path = qc_dir / f"{row['clip_id']}_dub.jpg"
        image.save(path, quality=85)
        out["dub_thumbnail"] = str(path)
    return out
