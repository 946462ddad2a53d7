"""How a dubbed mouth compares with the presenter's own mouth in the footage (issue 29).

A dub re-draws the mouth of a real presenter whose real mouth is in the footage. These meters
measure a dub and its footage the same way, so each figure is read as a ratio, dub / footage.

Per frame, from the frame and the 68 dlib landmarks of its face:

* ``opening`` (:func:`lip_gap`): the inner-lip gap, mean of |61-67|, |62-66|, |63-65|, over the
  inter-ocular distance (``iod``, between the eye centres, the means of points 36-41 and 42-47).
  Closed lips read about 0-0.04 (fit noise); real presenters' mouths in speech vary with a
  standard deviation of 0.06-0.09 (``../shared/research/real_measurements.md``; the kitchen
  presenter 0.078, median 0.15). Unlike
  :func:`fixtalk.measure.faces.mouth_opening` (over the mouth width) it does not shrink when the
  lips spread.
* ``sharpness``: variance of the 3x3 Laplacian of the grey mouth patch (grey levels 0-255). The
  patch is the frame resampled into a canonical face frame, eye centres at (-0.5, 0) and (0.5, 0)
  iod, ``PX_PER_IOD`` pixels per iod (so a 180-px face and a 400-px one compare), cut to the
  clip's :class:`MouthBox`. Teeth, lip lines and stubble raise it; a soft, blurred or upscaled
  mouth lowers it.
* ``change``: mean absolute difference (grey levels) between the mouth patch and the previous
  frame's. The patch is placed by the ``align`` landmarks' eye centres only (the footage's face
  track: speech does not move the eyes), so head motion does not count, the mouth's does, and so
  does flicker.

:func:`mouth_box` is the extent of the lip points 48-67 over the footage's frames in the canonical
frame (2nd-98th percentile), ``MARGIN`` iod wider on each side: one box per footage, used for the
dub and the footage alike.

Clip figures (:func:`clip_figures`), over the frames where the speech runs (outside its pauses of
0.4 s or more, :mod:`fixtalk.measure.speech_pauses`; every measured frame without audio):
``opening_std_speech``, ``sharpness_median``, ``change_median``, ``pause_motion_ratio`` (the
opening's motion inside pauses of ``LONG_PAUSE_S`` or more, about each pause's own mean, over
``opening_std_speech``: a real mouth rests there) and, with phones, ``phone_corr`` (lag 0) and
``pbm_closed_share``: the share of P/B/M phones during which the lips close (the smallest opening
over the phone's frames at most ``closed_at``, ``CLOSED_AT`` = 0.05 iod, a third of a real
presenter's median opening in speech): higher is better, 1.0 = every bilabial closed.
:func:`ratios` divides a dub's figures by its footage's. Frames where the head moves too fast to
fit (:func:`steady`) are best left out of both sides (``use``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import cv2
import numpy as np

from fixtalk.measure.faces import Face, box_from_landmarks, face_embedding, fit_landmarks
from fixtalk.measure.lip_sync import pause_motion
from fixtalk.measure.phone_sync import Phone, phone_sync
from fixtalk.measure.speech_pauses import speech_activity

#: Canonical scale of the mouth patch: pixels per inter-ocular distance.
PX_PER_IOD = 64
#: Margin of the mouth box around the lips' extent, in iod.
MARGIN = 0.15
#: Pauses at least this long are where a mouth should rest (``pause_motion_ratio``).
LONG_PAUSE_S = 0.8
#: Pauses at least this long are left out of "speech" (as QC's ``qc.pause_min_s``).
SPEECH_PAUSE_S = 0.4
#: A bilabial counts as closed when the smallest opening over its frames is at most this (iod).
CLOSED_AT = 0.05
SAMPLE_RATE = 16000
#: :func:`steady`: most the eye midpoint may move per frame (iod), and how far (share) the eye
#: distance may be off its median (a fast turn, motion blur or a track glitch: the kitchen
#: presenter's track jumps 0.6 iod in one frame of a fast head turn, where the fit misses the lips).
MAX_HEAD_STEP, MAX_SCALE_OFF = 0.15, 0.15


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(landmarks, np.float64)
    return pts[36:42].mean(0), pts[42:48].mean(0)


def lip_gap(landmarks: np.ndarray) -> float:
    """Inner-lip gap over the inter-ocular distance (see the module docstring)."""
    pts = np.asarray(landmarks, np.float64)
    left, right = eye_centres(pts)
    iod = float(np.linalg.norm(right - left))
    gap = np.mean([np.linalg.norm(pts[61 + i] - pts[67 - i]) for i in range(3)])
    return float(gap / iod) if iod > 1e-6 else math.nan


def canonical(landmarks: np.ndarray) -> np.ndarray:
    """The landmarks in the canonical face frame: eye centres at (-0.5, 0) and (0.5, 0)."""
    pts = np.asarray(landmarks, np.float64)
    left, right = eye_centres(pts)
    axis = right - left
    iod = float(np.hypot(*axis))
    c, s = axis / iod
    rel = pts - (left + right) / 2
    return np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], 1) / iod


@dataclass(frozen=True)
class MouthBox:
    """The mouth patch's extent in the canonical face frame (iod units; y grows downwards)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the patch in pixels."""
        return round((self.y1 - self.y0) * PX_PER_IOD), round((self.x1 - self.x0) * PX_PER_IOD)


def mouth_box(landmarks: Iterable[np.ndarray | None]) -> MouthBox:
    """The box around the lip points 48-67 over ``landmarks`` (frames without a face: None or
    NaN), ``MARGIN`` wider on each side."""
    lips = [canonical(lm)[48:68] for lm in landmarks if lm is not None and np.isfinite(lm).all()]
    if not lips:
        raise ValueError("no landmarks to place the mouth box")
    pts = np.concatenate(lips)
    lo, hi = np.percentile(pts, 2, axis=0), np.percentile(pts, 98, axis=0)
    return MouthBox(lo[0] - MARGIN, lo[1] - MARGIN, hi[0] + MARGIN, hi[1] + MARGIN)


def mouth_patch(frame: np.ndarray, align: np.ndarray, box: MouthBox) -> np.ndarray:
    """The grey (float32) mouth patch of ``frame``, placed by the eye centres of ``align``."""
    left, right = eye_centres(align)
    axis = right - left
    iod = float(np.hypot(*axis))
    c, s = axis / iod
    rot = np.array([[c, s], [-s, c]]) * (PX_PER_IOD / iod)  # frame -> canonical pixels
    offset = -rot @ ((left + right) / 2) - PX_PER_IOD * np.array([box.x0, box.y0])
    h, w = box.shape
    grey = cv2.cvtColor(np.ascontiguousarray(frame[:, :, :3]), cv2.COLOR_RGB2GRAY)
    return cv2.warpAffine(grey, np.hstack([rot, offset[:, None]]), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE).astype(np.float32)


def laplacian_variance(patch: np.ndarray) -> float:
    return float(cv2.Laplacian(patch, cv2.CV_32F, ksize=1).var())


def steady(landmarks: np.ndarray, max_step: float = MAX_HEAD_STEP, max_scale: float = MAX_SCALE_OFF
           ) -> np.ndarray:
    """Per frame of a track's ``landmarks`` (T, 68, 2; NaN where no face): whether the face is
    steady enough to measure: the eye midpoint moves at most ``max_step`` iod from the previous
    frame and to the next, and the eye distance is within ``max_scale`` of the track's median
    (a head turning fast, motion blur or a track glitch make the landmark fit unreliable)."""
    pts = np.asarray(landmarks, np.float64)
    left, right = pts[:, 36:42].mean(1), pts[:, 42:48].mean(1)
    iod = np.linalg.norm(right - left, axis=1)
    step = np.linalg.norm(np.diff((left + right) / 2, axis=0), axis=1) / iod[1:]
    step = np.where(np.isfinite(step), step, np.inf)
    moves = np.maximum(np.r_[0.0, step], np.r_[step, 0.0])
    with np.errstate(invalid="ignore"):
        scale = np.abs(iod / np.nanmedian(iod) - 1.0) if np.isfinite(iod).any() else iod
        return (moves <= max_step) & (scale <= max_scale)


def fit_face(frame: np.ndarray, near: np.ndarray, jitter: bool = False, refits: int = 3) -> np.ndarray:
    """68 landmarks of the face in ``frame`` near the landmarks ``near`` (e.g. the footage track's),
    refitted in their own box (:func:`fixtalk.measure.faces.fit_landmarks`)."""
    return fit_landmarks(frame, box_from_landmarks(near), refits=refits, jitter=jitter)


@dataclass
class MouthTrack:
    """Per measured frame: ``opening``, ``sharpness``, ``change`` (to the previous frame; NaN
    where it does not follow it or either has no face); NaN where no face."""

    opening: np.ndarray
    sharpness: np.ndarray
    change: np.ndarray

    def __len__(self) -> int:
        return len(self.opening)


def _valid(lm: np.ndarray | None) -> bool:
    return lm is not None and bool(np.isfinite(lm).all())


def measure_mouth(frames: Iterable[np.ndarray], landmarks: Sequence[np.ndarray | None] | None,
                  box: MouthBox, *, align: Sequence[np.ndarray | None] | None = None,
                  follows: Sequence[bool] | None = None, jitter: bool = False, refits: int = 3
                  ) -> MouthTrack:
    """The per-frame figures of ``frames`` (RGB uint8; any iterable, read once, only the mouth
    patches are held) whose faces have ``landmarks`` (the opening; None: fitted on each frame
    near ``align``, :func:`fit_face` with ``jitter`` and ``refits``); the patches are placed by
    ``align`` (default ``landmarks``). ``follows[k]``: frame k directly follows frame k-1
    (default: all consecutive). Measure a dub and its footage the same way (both fitted, or both given)."""
    if landmarks is None and align is None:
        raise ValueError("give the landmarks, or the align landmarks to fit them near")
    align = landmarks if align is None else align
    opening, sharp, change = [], [], []
    prev = None
    for k, frame in enumerate(frames):
        al = align[k]
        if landmarks is not None:
            lm = landmarks[k]
        else:
            lm = fit_face(frame, al, jitter, refits) if _valid(al) else None
        ok = _valid(lm) and _valid(al)
        patch = mouth_patch(frame, al, box) if ok else None
        opening.append(lip_gap(lm) if ok else math.nan)
        sharp.append(laplacian_variance(patch) if ok else math.nan)
        linked = k > 0 and (follows is None or bool(follows[k]))
        change.append(float(np.abs(patch - prev).mean()) if ok and linked and prev is not None
                      else math.nan)
        prev = patch
    return MouthTrack(*(np.asarray(v, np.float64) for v in (opening, sharp, change)))


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def clip_figures(track: MouthTrack, fps: float, *, samples: np.ndarray | None = None,
                 phones: list[Phone] | None = None, use: np.ndarray | None = None,
                 closed_at: float = CLOSED_AT) -> dict[str, float]:
    """The clip figures of the module docstring. ``track``: every frame of the clip, in order;
    ``samples``: the clip's 16 kHz mono audio (None: no audio, every measured frame is
    "speech"); ``phones``: its timed phones (align stage, words.json); ``use``: the frames to
    judge (e.g. dubbed and :func:`steady`; default all)."""
    n = len(track)
    full = {k: getattr(track, k).copy() for k in ("opening", "sharpness", "change")}
    if use is not None:
        for arr in full.values():
            arr[~np.asarray(use, bool)] = np.nan
    speech = np.isfinite(full["opening"])
    out = {"pause_seconds": 0.0, "pause_motion_ratio": math.nan, "phone_corr": math.nan,
           "pbm_closed_share": math.nan, "pbm_count": 0}
    has_audio = samples is not None and np.asarray(samples).size > 0
    if has_audio:
        speech &= speech_activity(samples, SAMPLE_RATE, fps, n, min_pause_s=SPEECH_PAUSE_S).speech
    opening = full["opening"]
    values = opening[speech & np.isfinite(opening)]
    out["opening_std_speech"] = float(values.std()) if values.size >= 3 else math.nan
    out["sharpness_median"] = _median(full["sharpness"][speech])
    out["change_median"] = _median(full["change"][speech])
    out["speech_frames"] = int(values.size)
    if has_audio:
        pause_std, pause_frames = pause_motion(
            opening, speech_activity(samples, SAMPLE_RATE, fps, n, min_pause_s=LONG_PAUSE_S))
        out["pause_seconds"] = round(pause_frames / fps, 3)
        std = out["opening_std_speech"]
        out["pause_motion_ratio"] = pause_std / std if std > 1e-9 else math.nan
    if phones:
        sync = phone_sync(opening, phones, fps)
        out["phone_corr"] = sync.corr
        out["pbm_count"] = len(sync.closures)
        if sync.closures:
            out["pbm_closed_share"] = float(np.mean(np.asarray(sync.closures) <= closed_at))
    return out


#: The clip figures that :func:`ratios` divides, and the ratio's name.
RATIOS = {"opening_std_speech": "motion_ratio", "sharpness_median": "sharpness_ratio",
          "change_median": "change_ratio"}


def ratios(dub: dict[str, float], footage: dict[str, float]) -> dict[str, float]:
    """``motion_ratio``, ``sharpness_ratio``, ``change_ratio``: the dub's figure over the
    footage's own (NaN where either is missing or the footage's is 0)."""
    out = {}
    for key, name in RATIOS.items():
        a, b = dub.get(key, math.nan), footage.get(key, math.nan)
        out[name] = float(a / b) if math.isfinite(a) and math.isfinite(b) and b > 1e-9 else math.nan
    return out


def identity_distance(a: np.ndarray, b: np.ndarray, landmarks: np.ndarray) -> float:
    """Euclidean distance of dlib's 128-d identity embeddings (:mod:`fixtalk.measure.identity`)
    of the face at ``landmarks`` in frames ``a`` and ``b`` (same person: < 0.6; a faithful dub of
    its own footage frame: well under 0.45)."""
    face = Face(tuple(int(round(v)) for v in box_from_landmarks(landmarks)), landmarks, 1.0)
    return float(np.linalg.norm(face_embedding(a, face) - face_embedding(b, face)))
