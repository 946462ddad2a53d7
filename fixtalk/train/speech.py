"""Speech for the synthetic set: espeak-ng synthesis, LibriVox recordings, forced alignment,
phones -> visemes -> per-frame mouth tracks.

Sources (both offline):
* espeak-ng (Debian package; its output is program output of a GPL-3 program, the text is ours);
* LibriVox recordings shipped by Debian's ``pocketsphinx-testdata`` (public domain) with their
  transcription file.
Phone timings come from pocketsphinx 5 forced alignment (10 ms frames) with its default US-English
acoustic model and dictionary, then are mapped to viseme classes with a target mouth opening
(inner-lip gap / mouth width) and a width factor (:mod:`fixtalk.visemes`), sampled at 25 fps.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fixtalk.train.data_format import FPS, SAMPLE_RATE, read_wav
from fixtalk.visemes import CLOSED_VISEMES, VISEMES, frame_visemes

LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")

# Our own sentences (common words, all in the CMU dictionary). The last ones are held out.
SENTENCES = [
    "the weather was warm and bright when we walked along the river",
    "please bring me the map before the meeting starts",
    "my brother plays the piano every morning at home",
    "we should open the window because the room is hot",
    "she bought a small boat and painted it blue",
    "the children laughed when the puppy jumped into the pool",
    "i think the answer is hidden in the old book",
    "our team will travel to the mountains next week",
    "put the apples on the table and wash your hands",
    "he told me a funny story about his first job",
    "the train was late so we waited for an hour",
    "you can see the stars much better far from the city",
    "my mother makes the best bread in the whole town",
    "they moved the heavy box into the back room",
    "a good plan needs time patience and a little luck",
    "the bird sang a happy song in the morning sun",
    "we ate fish and potatoes by the sea",
    "open your mouth wide and say ah for the doctor",
    "every day brings a new chance to learn something",
    "the garden looks beautiful after the rain",
    # held out for evaluation
    "thank you all for coming to see the new film tonight",
    "remember to call your friend when you arrive safely",
]
HELD_OUT_SENTENCES = 2

ESPEAK_VOICES = ["en-us", "en-us+f3", "en-gb+m3", "en-us+f4", "en-gb-x-rp+m1", "en-us+m5", "en-gb+f2"]
HELD_OUT_VOICES = ["en-029+f5"]


@dataclass
class Utterance:
    """Speech at 16 kHz with its transcript and aligned phones ((phone, start_s, end_s), ...)."""

    audio: np.ndarray
    text: str
    source: str
    licence: str
    phones: list[tuple[str, float, float]]


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def espeak(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng -> float32 16 kHz mono."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(out), text]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not out.exists():
            raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {res.stderr.strip()} "
                               "(install the Debian package espeak-ng)")
        samples, sr = read_wav(out)
    return resample(samples, sr)


def librivox_recordings() -> list[tuple[Path, str]]:
    """(wav path, lowercase transcript) of the LibriVox clips shipped by pocketsphinx-testdata."""
    trans = LIBRIVOX_DIR / "transcription"
    if not trans.exists():
        return []
    out = []
    for line in trans.read_text().splitlines():
        m = re.match(r"\s*(.*?)\s*\((\S+)\)\s*$", line)
        if not m:
            continue
        text = re.sub(r"</?s>", "", m.group(1)).strip()
        wav = LIBRIVOX_DIR / f"{m.group(2)}.wav"
        if wav.exists():
            out.append((wav, text))
    return out


def align_phones(audio: np.ndarray, text: str) -> list[tuple[str, float, float]]:
    """Forced alignment with pocketsphinx 5: (ARPAbet phone or 'SIL', start s, end s), in order."""
    from pocketsphinx import Decoder

    pad = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)  # alignment fails on speech at the edges
    padded = np.concatenate([pad, np.asarray(audio, np.float32), pad])
    pcm = (np.clip(padded, -1, 1) * 32767).astype("<i2").tobytes()
    dec = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    words = re.sub(r"[^a-z' ]", " ", text.lower()).split()
    dec.set_align_text(" ".join(words))
    try:
        for _ in range(2):  # first pass: word alignment; second: phone alignment
            dec.start_utt()
            dec.process_raw(pcm, full_utt=True)
            dec.end_utt()
            if _ == 0:
                dec.set_alignment()
        al = dec.get_alignment()
    except RuntimeError as exc:
        raise RuntimeError(f"pocketsphinx could not align the text {text!r}: {exc}") from exc
    if al is None:
        raise RuntimeError(f"pocketsphinx could not align the text {text!r}")
    off = len(pad) / SAMPLE_RATE
    phones = []
    for word in al:
        for ph in word:
            phones.append((ph.name, ph.start / 100.0 - off, (ph.start + ph.duration) / 100.0 - off))
    return phones


def viseme_track(phones: list[tuple[str, float, float]], num_frames: int, *, amplitude: float = 1.0,
                 smooth: float = 0.7) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-frame viseme label, mouth opening and width factor at 25 fps.

    The label of frame t is the viseme of the phone under the frame centre (t + 0.5) / 25 s.
    Openings are Gaussian-smoothed (``smooth`` frames) for coarticulation, scaled by
    ``amplitude``, and frames whose label is a closed viseme (silence, P/B/M) are exactly closed.
    """
    labels = frame_visemes(phones, num_frames, FPS)
    target_open = np.array([VISEMES[v][0] for v in labels], dtype=np.float64) * amplitude
    target_width = np.array([VISEMES[v][1] for v in labels], dtype=np.float64)
    if smooth > 0:
        from scipy.ndimage import gaussian_filter1d

        target_open = gaussian_filter1d(target_open, smooth, mode="nearest")
        target_width = gaussian_filter1d(target_width, smooth, mode="nearest")
    closed = np.array([v in CLOSED_VISEMES for v in labels])
    target_open[closed] = 0.0
    return labels, target_open.astype(np.float32), target_width.astype(np.float32)


def speech_utterances(held_out: bool, voices_rates: int = 2, seed: int = 0) -> list[Utterance]:
    """Training (``held_out=False``) or evaluation utterances: espeak sentences x voices/rates and
    LibriVox recordings (the last recording is held out), each force-aligned."""
    rng = np.random.default_rng(seed)
    if held_out:
        sentences = SENTENCES[-HELD_OUT_SENTENCES:]
        voices = HELD_OUT_VOICES
        books = librivox_recordings()[-1:]
    else:
        sentences = SENTENCES[:-HELD_OUT_SENTENCES]
        voices = ESPEAK_VOICES
        books = librivox_recordings()[:-1]
    out = []
    for si, text in enumerate(sentences):
        for k in range(voices_rates):
            for attempt in range(4):  # forced alignment occasionally fails: try another voice/rate
                voice = voices[(si + k + attempt) % len(voices)]
                rate = int(rng.integers(130, 190))
                pitch = int(rng.integers(30, 70))
                audio = espeak(text, voice, rate, pitch)
                try:
                    phones = align_phones(audio, text)
                except RuntimeError:
                    continue
                out.append(Utterance(audio, text, f"espeak-ng {voice} rate {rate} pitch {pitch}",
                                     "espeak-ng output (GPL-3 program, our text)", phones))
                break
    for wav, text in books:
        samples, sr = read_wav(wav)
        audio = resample(samples, sr)
        try:
            phones = align_phones(audio, text)
        except RuntimeError:
            continue
        out.append(Utterance(audio, text, f"LibriVox via pocketsphinx-testdata: {wav.name}",
                             "public domain (LibriVox)", phones))
    if not out:
        raise RuntimeError("no utterance could be synthesised and aligned (need espeak-ng and pocketsphinx)")
    return out
