"""Where a clip's speech pauses, from its audio alone, at the video frame rate.

Lip-sync QC needs to know when the speaker is silent: a real mouth rests in a pause of more
than about 0.4 s, and a render whose mouth keeps moving there shows the "lip jitter" viewers
notice most (docs/qc.md, "Lip sync"). Phone timings are not needed for this, so it works for any
clip; a frame is *silent* when its RMS level is low against the clip's own range:

* ``floor`` = the 5th percentile of the per-frame level (dBFS), ``level`` = the 95th;
* a frame is silent below ``floor + 0.35 (level - floor)``, kept between ``level - 50 dB`` and
  ``level - 15 dB``. On the LibriVox readings of pocketsphinx-testdata (room noise about
  -48 dBFS, speech peaks about -19 dBFS) that is about -38 dBFS; on TTS with digital silence
  it is 50 dB under the speech.

A *pause* is a run of silent frames at least ``min_pause_s`` long. Its *interior* leaves out
``margin_s`` on each side that borders speech, because the lips part before the first sound and
close after the last one; the interior is where a resting mouth is expected.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fixtalk.measure.lipsync import audio_envelope

#: The silent/speech split, as a fraction of the clip's level range above its floor.
SPLIT = 0.35
FLOOR_PERCENTILE, LEVEL_PERCENTILE = 5.0, 95.0


@dataclass(frozen=True)
class Pause:
    """A pause of the speech: frames ``[start, end)``; its interior ``[inner_start, inner_end)``."""

    start: int
    end: int
    inner_start: int
    inner_end: int

    @property
    def interior(self) -> slice:
        return slice(self.inner_start, self.inner_end)


@dataclass
class SpeechActivity:
    """Per video frame: ``silent`` (below ``threshold_db``) and ``in_pause``; the pauses."""

    silent: np.ndarray
    in_pause: np.ndarray
    pauses: list[Pause]
    threshold_db: float

    @property
    def speech(self) -> np.ndarray:
        """Frames of running speech: every frame outside the pauses (short gaps included)."""
        return ~self.in_pause

    def interior_frames(self) -> int:
        return sum(p.inner_end - p.inner_start for p in self.pauses)


def frame_levels_db(samples: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """The RMS level of each video frame's span of audio, in dBFS (-120 for digital silence)."""
    env = audio_envelope(samples, sample_rate, fps, n_frames)
    return 20.0 * np.log10(np.maximum(env, 1e-6))


def silence_threshold_db(levels_db: np.ndarray) -> float:
    """The level below which a frame counts as silent (see the module docstring)."""
    floor, level = np.percentile(levels_db, [FLOOR_PERCENTILE, LEVEL_PERCENTILE])
    return float(np.clip(floor + SPLIT * (level - floor), level - 50.0, level - 15.0))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))


def speech_activity(samples: np.ndarray, sample_rate: int, fps: float, n_frames: int, *,
                    min_pause_s: float = 0.4, margin_s: float = 0.12) -> SpeechActivity:
    """Silent frames and pauses of ``samples`` over ``n_frames`` video frames at ``fps``."""
    levels = frame_levels_db(samples, sample_rate, fps, n_frames)
    if levels.size == 0:
        empty = np.zeros(0, bool)
        return SpeechActivity(empty, empty, [], float("nan"))
    threshold = silence_threshold_db(levels)
    silent = levels <= threshold
    min_len, margin = max(1, round(min_pause_s * fps)), round(margin_s * fps)
    pauses, in_pause = [], np.zeros(n_frames, bool)
    for start, end in _runs(silent):
        if end - start < min_len:
            continue
        inner_start = start + (margin if start > 0 else 0)
        inner_end = end - (margin if end < n_frames else 0)
        pauses.append(Pause(start, end, inner_start, max(inner_start, inner_end)))
        in_pause[start:end] = True
    return SpeechActivity(silent, in_pause, pauses, threshold)
