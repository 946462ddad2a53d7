"""Talking clips whose lip sync is known, for validating lip-sync QC (tests/test_lip_sync_qc.py,
benchmarks/lip_sync_qc.py).

The speech is real: two LibriVox readings of pocketsphinx-testdata (public domain) with a pause
of ``pause_s`` seconds between them. The mouth of a public-domain portrait
(:func:`fixtalk.train.talking_footage.mouth_frames`) follows the phones of that speech, as
pocketsphinx force-aligns them, through a viseme table that is deliberately *not* the one QC
measures with: each viseme's opening is scaled by a random factor (0.6-1.4), the track is
smoothed over 1.5 frames, the lips move one frame ahead of the sound (as real lips do), and
landmark-sized noise is added. Cases (:data:`CASES`):

* ``synced``: that mouth with its speech;
* ``shift_0.2`` / ``shift_0.5`` / ``shift_2.0``: the same mouth late by 0.2 / 0.5 / 2 s;
* ``frozen``: the mouth held closed while the speech plays;
* ``talks_in_pause``: the mouth keeps talking through the pause (the speech's first second
  of mouth motion replayed there): lip jitter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fixtalk.train.data_format import FPS, SAMPLE_RATE, read_wav
from fixtalk.train.speech import LIBRIVOX_DIR, align_phones, librivox_recordings, resample
from fixtalk.visemes import CLOSED_VISEMES, VISEMES, frame_visemes

CASES = ("synced", "shift_0.2", "shift_0.5", "shift_2.0", "frozen", "talks_in_pause")
#: the two readings (by file stem suffix) spoken with a pause between
READINGS = ("0880", "0930")


@dataclass
class Speech:
    """16 kHz speech, its words, its phones ((name, start_s, end_s), ...) and the pause."""

    audio: np.ndarray
    text: str
    phones: list[tuple[str, float, float]]
    pause: tuple[float, float]

    @property
    def frames(self) -> int:
        return int(len(self.audio) / SAMPLE_RATE * FPS)


def speech_with_pause(pause_s: float = 1.5, lead_s: float = 0.3, readings: tuple[str, ...] = READINGS
                      ) -> Speech:
    """The LibriVox ``readings`` joined by ``pause_s`` of silence, with ``lead_s`` before and after."""
    chosen = {wav.stem[-4:]: (wav, text) for wav, text in librivox_recordings()}
    if not all(r in chosen for r in readings):
        raise FileNotFoundError(f"LibriVox readings {readings} not found under {LIBRIVOX_DIR} "
                                "(install the Debian package pocketsphinx-testdata)")
    parts, phones, texts, t, pause = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)], [], [], lead_s, (0.0, 0.0)
    for i, key in enumerate(readings):
        wav, text = chosen[key]
        samples, sr = read_wav(wav)
        audio = resample(samples, sr)
        phones += [(p, s + t, e + t) for p, s, e in align_phones(audio, text)]
        texts.append(text)
        t += len(audio) / SAMPLE_RATE
        gap = pause_s if i < len(readings) - 1 else lead_s
        if i == 0:
            pause = (t, t + gap)
        parts += [audio, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        t += int(gap * SAMPLE_RATE) / SAMPLE_RATE
    return Speech(np.concatenate(parts), " ".join(texts), phones, pause)


def natural_mouth(speech: Speech, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(opening, width factor) per 25 fps frame: the phones through a randomly rescaled viseme
    table, coarticulated, one frame early, with noise (see the module docstring)."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(seed)
    n = speech.frames
    labels = frame_visemes(speech.phones, n, FPS)
    scale = {v: float(rng.uniform(0.6, 1.4)) for v in VISEMES}
    opening = np.array([VISEMES[v][0] * scale[v] for v in labels])
    width = np.array([VISEMES[v][1] for v in labels])
    opening = gaussian_filter1d(opening, 1.5, mode="nearest")
    opening[np.array([v in CLOSED_VISEMES for v in labels])] *= 0.3  # lips meet, not quite shut
    opening = np.r_[opening[1:], opening[-1:]]  # the lips lead the sound by a frame
    opening = np.clip(opening + rng.normal(0, 0.01, n), 0, None)
    return opening, gaussian_filter1d(width, 1.5, mode="nearest")


def case_mouth(case: str, speech: Speech, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (opening, width) tracks of one of :data:`CASES`."""
    opening, width = natural_mouth(speech, seed)
    if case == "synced":
        return opening, width
    if case.startswith("shift_"):
        k = round(float(case.split("_")[1]) * FPS)
        return np.r_[np.zeros(k), opening[:-k]], np.r_[np.ones(k), width[:-k]]
    if case == "frozen":
        return np.zeros_like(opening), np.ones_like(width)
    if case == "talks_in_pause":
        a, b = (round(t * FPS) for t in speech.pause)
        start = round(speech.phones[0][1] * FPS)
        opening, width = opening.copy(), width.copy()
        opening[a:b] = opening[start:start + b - a]
        width[a:b] = width[start:start + b - a]
        return opening, width
    raise ValueError(f"unknown case {case!r}; expected one of {', '.join(CASES)}")


def write_case(path, case: str, speech: Speech, picture: np.ndarray, *, size: int = 256,
               seed: int = 0):
    """Render one case of ``picture`` (a 25 fps MP4 with the speech as AAC) to ``path``."""
    from fixtalk.train.talking_footage import mouth_frames, write_footage

    opening, width = case_mouth(case, speech, seed)
    frames = mouth_frames(picture, opening, width, size=size, seed=seed)
    return write_footage(frames, FPS, path, audio=speech.audio)
