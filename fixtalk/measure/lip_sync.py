"""The lip-sync figures of one clip, from its mouth track, its audio and (when the script was
aligned) its phone timings. Judged by :func:`stages.checks.rules.judge`; what each figure can and
cannot tell is in docs/qc.md ("Lip sync").

* ``mouth_motion_speech``: how much the mouth moves while the speech runs (std of the opening
  over every frame outside the pauses); ``mouth_motion`` is the same over the whole clip.
* ``mouth_motion_pause``: how much it moves inside the speech's pauses (the interiors of silent
  stretches of at least ``qc.pause_min_s``, :mod:`fixtalk.measure.speech_pauses`), as the std about each
  pause's own mean, so a mouth that rests slightly parted is not motion; ``pause_seconds`` is how
  long those interiors are, ``pause_motion_ratio`` the pause motion over the speech motion.
* ``phone_corr``, ``bilabial_closure`` and their evidence (:mod:`fixtalk.measure.phone_sync`).
* ``sync_corr`` / ``sync_lag_frames``: the mouth against the loudness envelope, reported for
  comparison only (real mouths do not follow loudness; see :mod:`fixtalk.measure.lipsync`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from fixtalk.measure.lipsync import audio_envelope, best_lag
from fixtalk.measure.phone_sync import Phone, PhoneSync, openness_target, phone_sync, segments_of
from fixtalk.measure.speech_pauses import SpeechActivity, speech_activity

SAMPLE_RATE = 16000


def _std(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.std(values)) if values.size >= 3 else math.nan


def pause_motion(mouth: np.ndarray, activity: SpeechActivity) -> tuple[float, float]:
    """``(std, seconds-in-frames)`` of the mouth opening inside the pause interiors, each pause
    centred on its own mean; (NaN, 0) without pauses."""
    parts = []
    for pause in activity.pauses:
        inside = mouth[pause.interior]
        inside = inside[np.isfinite(inside)]
        if inside.size:
            parts.append(inside - inside.mean())
    if not parts:
        return math.nan, 0
    pooled = np.concatenate(parts)
    return (float(np.sqrt(np.mean(pooled ** 2))) if pooled.size >= 3 else math.nan), int(pooled.size)


def measure_lip_sync(mouth: np.ndarray, samples: np.ndarray, fps: float,
                     phones: list[Phone] | None, *, pause_min_s: float = 0.4,
                     pause_margin_s: float = 0.12, max_lag_frames: int = 10,
                     phone_max_lag_frames: int = 15) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics, curves)`` of one clip: ``mouth`` per frame (NaN where no face), ``samples``
    16 kHz mono audio, ``phones`` from the align stage (None: not aligned)."""
    mouth = np.asarray(mouth, np.float64)
    n = mouth.size
    nan = math.nan
    metrics: dict[str, Any] = {
        "mouth_motion": nan, "mouth_motion_speech": nan, "mouth_motion_pause": nan,
        "pause_seconds": 0.0, "pause_motion_ratio": nan, "sync_corr": nan, "sync_lag_frames": None,
        **PhoneSync().metrics()}
    env = audio_envelope(samples, SAMPLE_RATE, fps, n)
    curves: dict[str, Any] = {"mouth": mouth.tolist(), "envelope": env.round(6).tolist()}
    if n < 3 or np.isfinite(mouth).sum() < 3 or not np.asarray(samples).size:
        return metrics, curves
    activity = speech_activity(samples, SAMPLE_RATE, fps, n, min_pause_s=pause_min_s,
                               margin_s=pause_margin_s)
    speech_std = _std(mouth[activity.speech])
    pause_std, pause_frames = pause_motion(mouth, activity)
    corr, lag = best_lag(mouth, env, max_lag_frames)
    metrics.update({
        "mouth_motion": _std(mouth), "mouth_motion_speech": speech_std,
        "mouth_motion_pause": pause_std, "pause_seconds": round(pause_frames / fps, 3),
        "pause_motion_ratio": pause_std / speech_std if speech_std > 1e-9 else nan,
        "sync_corr": corr, "sync_lag_frames": int(lag)})
    curves["pause"] = activity.in_pause.astype(int).tolist()
    if phones:
        metrics.update(phone_sync(mouth, phones, fps, phone_max_lag_frames).metrics())
        curves["phone_target"] = openness_target(segments_of(phones), n, fps).round(4).tolist()
    return metrics, curves
