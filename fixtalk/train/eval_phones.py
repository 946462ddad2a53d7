"""Line (b) of ``make eval-default`` measured as lip-sync QC measures a clip
(:mod:`fixtalk.measure.lip_sync`): the rendered mouth against the phones of its speech (openness-target
correlation, bilabial closure) and its motion in the speech's pauses, beside the loudness-envelope
correlation the line has always reported.

The held-out clips carry their per-frame visemes (``meta.visemes``, from pocketsphinx phone
timings); they are the phones here. The synthetic set's own mouths were made from the same viseme
table (:mod:`fixtalk.visemes`), so on these clips the phone figures say how well the model learnt
that table, an upper bound for what they read on real faces (real footage: 0.23-0.31).
"""
from __future__ import annotations

import numpy as np

from fixtalk.train.data_format import SAMPLE_RATE


def phone_figures(mouths: list[np.ndarray], labels: list[list[str]], audios: list[np.ndarray],
                  fps: float) -> dict:
    """Per clip ``mouths[i]`` (opening per measured frame at ``fps``), its viseme ``labels`` at
    the same frames and its 16 kHz audio -> mean phone_corr over the clips, bilabial closure pooled
    over them, and mouth motion in pauses (pooled) against motion in speech."""
    from fixtalk.measure.lip_sync import pause_motion
    from fixtalk.measure.phone_sync import closure_ratio, segments_from_labels, viseme_sync
    from fixtalk.measure.speech_pauses import speech_activity

    corrs, closures, openings, pause_parts, speech_parts = [], [], [], [], []
    for mouth, label, audio in zip(mouths, labels, audios):
        res = viseme_sync(mouth, segments_from_labels(label, fps), fps)
        if np.isfinite(res.corr):
            corrs.append(res.corr)
        closures += res.closures
        openings += res.openings
        activity = speech_activity(audio, SAMPLE_RATE, fps, len(mouth))
        std, frames = pause_motion(mouth, activity)
        if frames:
            pause_parts.append((std, frames))
        speech = mouth[activity.speech]
        speech_parts.append(speech[np.isfinite(speech)] - np.nanmean(speech))
    frames = sum(f for _, f in pause_parts)
    pause_std = float(np.sqrt(sum(s * s * f for s, f in pause_parts) / frames)) if frames else float("nan")
    speech_std = float(np.std(np.concatenate(speech_parts))) if speech_parts else float("nan")
    return {"phone_corr": float(np.mean(corrs)) if corrs else float("nan"),
            "phone_corr_per_clip": corrs,
            "bilabial_closure": closure_ratio(closures, openings),
            "bilabials": len(closures), "open_vowels": len(openings),
            "mouth_std_pauses": pause_std, "pause_seconds": frames / fps,
            "pause_motion_ratio": pause_std / speech_std if speech_std > 1e-9 else float("nan")}
