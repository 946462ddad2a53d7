"""Lip sync against the spoken phones: does the mouth open on open vowels and close on P/B/M?

The align stage's pocketsphinx backend writes, per script word, its phones with their times
(``words.json``, :mod:`stages.align`). From them:

* **Openness target**: per video frame, the target opening of the phone under the frame's centre
  (:mod:`fixtalk.visemes`: open vowels high, P/B/M and silence zero), smoothed with a Gaussian of
  one frame for coarticulation. ``phone_corr`` is its Pearson correlation with the measured mouth
  opening over the timed speech (first phone to last), at lag 0; the best lag within a few frames
  is reported beside it. Unlike the loudness envelope it puts a loud /m/ shut and a quiet /a/
  open, so on real footage it peaks at lag 0 where the envelope finds a made-up lag
  (``/work/shared/research/real_measurements.md``): real footage with its own speech 0.23-0.31,
  EDTalk renders 0.22-0.33, the same footage with its speech moved by 4-6 s -0.01-0.11. Where
  it peaks (``phone_lag_frames``, searched over +-15 frames) is trustworthy where the envelope's
  lag is not: real footage peaked at lag 0, EDTalk's renders at -1.
* **Bilabial closure**: the lips must meet on P, B and M. ``bilabial_closure`` is the median,
  over the clip's bilabial phones, of the smallest opening in the frames the phone overlaps,
  divided by the median over its open vowels of the largest opening in theirs: near 0 when the
  lips close where they should, near 1 when the mouth ignores them.

Only phones of words the aligner placed with confidence (``aligned``) are used; how much phone
evidence a clip has (seconds of timed speech, number of bilabials and open vowels) is reported
with the figures, so the rules judge only clips with enough of it (:mod:`stages.checks.rules`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fixtalk.measure.lipsync import lagged_correlations
from fixtalk.visemes import OPEN_VISEMES, VISEMES, viseme_of


@dataclass(frozen=True)
class Phone:
    """One phone: ARPAbet name and its span in seconds."""

    name: str
    start: float
    end: float

    @property
    def viseme(self) -> str:
        return viseme_of(self.name)


def read_phones(words_json: str | Path) -> list[Phone]:
    """The phones of the confidently aligned words of an align-stage ``words.json`` (empty when
    the file has no phone timings, e.g. from the whisperx backend)."""
    data = json.loads(Path(words_json).read_text())
    phones = []
    for word in data.get("words", []):
        if not word.get("aligned"):
            continue
        for p in word.get("phones") or []:
            if p.get("start") is not None and p.get("end") is not None and p["end"] > p["start"]:
                phones.append(Phone(str(p["phone"]), float(p["start"]), float(p["end"])))
    return sorted(phones, key=lambda p: p.start)


#: A stretch of one viseme: (viseme class, start s, end s).
Segment = tuple[str, float, float]


def segments_of(phones: list[Phone]) -> list[Segment]:
    """The phones as viseme segments, in time order."""
    return [(p.viseme, p.start, p.end) for p in sorted(phones, key=lambda p: p.start)]


def segments_from_labels(labels: list[str], fps: float) -> list[Segment]:
    """Viseme segments from per-frame viseme labels (runs of one label), e.g. the ``visemes`` of
    a synthetic clip's meta (:func:`fixtalk.visemes.frame_visemes`)."""
    out: list[Segment] = []
    for i, label in enumerate(labels):
        if out and out[-1][0] == label and abs(out[-1][2] - i / fps) < 1e-9:
            out[-1] = (label, out[-1][1], (i + 1) / fps)
        else:
            out.append((label, i / fps, (i + 1) / fps))
    return out


def openness_target(segments: list[Segment], n_frames: int, fps: float, smooth_frames: float = 1.0
                    ) -> np.ndarray:
    """Per frame, the target opening of the viseme under the frame centre (0 in silence)."""
    target = np.zeros(n_frames, np.float64)
    centres = (np.arange(n_frames) + 0.5) / float(fps)
    for viseme, start, end in segments:
        target[(centres >= start) & (centres < end)] = VISEMES[viseme][0]
    if smooth_frames > 0 and n_frames > 1:
        from scipy.ndimage import gaussian_filter1d

        target = gaussian_filter1d(target, smooth_frames, mode="nearest")
    return target


def _frames_of(start: float, end: float, fps: float, n_frames: int) -> slice:
    """The frames whose span ``[t, t+1) / fps`` overlaps ``[start, end)``."""
    first = max(0, int(math.floor(start * fps)))
    last = min(n_frames, int(math.ceil(end * fps)))
    return slice(first, max(first + 1, last))


@dataclass
class PhoneSync:
    """The phone figures of one clip (NaN / 0 where there was nothing to measure);
    ``closures`` / ``openings``: the per-phone values behind ``bilabial_closure``."""

    corr: float = math.nan           # phone_corr: at lag 0
    corr_best: float = math.nan      # at the best lag within +-max_lag
    lag_frames: int | None = None    # that lag (same sign convention as fixtalk.measure.lipsync)
    speech_s: float = 0.0            # seconds of timed, spoken phones
    bilabial_closure: float = math.nan
    closures: list[float] = field(default_factory=list)
    openings: list[float] = field(default_factory=list)

    def metrics(self) -> dict:
        return {"phone_corr": self.corr, "phone_corr_best": self.corr_best,
                "phone_lag_frames": self.lag_frames, "phone_speech_s": round(self.speech_s, 3),
                "bilabial_closure": self.bilabial_closure, "bilabial_count": len(self.closures),
                "open_vowel_count": len(self.openings)}


def closure_ratio(closures: list[float], openings: list[float]) -> float:
    """Median closure opening over median open-vowel opening (NaN without both)."""
    if not closures or not openings or np.median(openings) <= 1e-6:
        return math.nan
    return float(np.median(closures) / np.median(openings))


def phone_sync(mouth: np.ndarray, phones: list[Phone], fps: float, max_lag: int = 15) -> PhoneSync:
    """Openness-target correlation and bilabial closure of the ``mouth`` track (per frame, NaN
    where no face) against ``phones`` (see the module docstring)."""
    return viseme_sync(mouth, segments_of(phones), fps, max_lag)


def viseme_sync(mouth: np.ndarray, segments: list[Segment], fps: float, max_lag: int = 15) -> PhoneSync:
    """:func:`phone_sync` on viseme segments."""
    mouth = np.asarray(mouth, np.float64)
    spoken = sorted((s for s in segments if s[0] != "sil"), key=lambda s: s[1])
    out = PhoneSync(speech_s=sum(end - start for _, start, end in spoken))
    n = mouth.size
    if not spoken or n < 3:
        return out
    target = openness_target(segments, n, fps)
    first = _frames_of(*spoken[0][1:], fps, n).start
    last = max(_frames_of(*s[1:], fps, n).stop for s in spoken)
    span = np.full(n, np.nan)
    span[first:last] = target[first:last]
    if np.isfinite(mouth[first:last]).sum() >= 3:
        corrs = lagged_correlations(mouth, span, max_lag)
        out.corr = corrs[0]
        out.lag_frames = max(corrs, key=lambda k: (round(corrs[k], 9), -abs(k)))
        out.corr_best = corrs[out.lag_frames]
    for viseme, start, end in spoken:
        frames = mouth[_frames_of(start, end, fps, n)]
        if not np.isfinite(frames).any():
            continue
        if viseme == "PBM":
            out.closures.append(float(np.nanmin(frames)))
        elif viseme in OPEN_VISEMES:
            out.openings.append(float(np.nanmax(frames)))
    out.bilabial_closure = closure_ratio(out.closures, out.openings)
    return out
