"""Offline English forced alignment and recognition with pocketsphinx 5 (CMU Sphinx).

Forced alignment: ``Decoder.set_align_text(script)`` builds a grammar that accepts only the
script (with optional silences), a decode then gives word segments via ``seg()``; a second pass
after ``set_alignment()`` gives phones via ``get_alignment()``. Frames are 10 ms.

Word confidence: pocketsphinx scores each frame relative to the best-scoring senone of that frame,
so a word's acoustic score divided by its frame count, ``c = ln(ascore) / frames`` (nats per
frame, <= 0), says how far the forced path is from the best free path: near 0 where the audio says
the word, strongly negative where the aligner had to force it. On LibriVox read speech, matching
words score about -1, words forced onto other speech below -4; espeak-ng speech scores -2..-5
even when it matches (the acoustic model was trained on human speech).

Free recognition (the default en-US LM) gives a transcript for the word error rate; it is usable
on clean read speech and poor on robotic TTS (espeak-ng), see docs in :mod:`stages.align`.

Out-of-vocabulary words get a pronunciation from espeak-ng's IPA output mapped to ARPAbet; if
that fails they are left out of the alignment (their time is interpolated by the subtitles).
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np

FRAME_SECONDS = 0.01

#: Pruning of the free-recognition search: at most 3000 active HMMs and 5 word exits per frame
#: (pocketsphinx defaults: 30000 and unlimited). On the five LibriVox test clips this gives the
#: same transcripts (WER 0.21-0.36) with 40 % less CPU time; narrower beams cost accuracy.
ASR_PRUNING = {"maxhmmpf": 3000, "maxwpf": 5}

# IPA (espeak-ng --ipa, en-us) -> ARPAbet, longest match first.
_IPA_ARPABET = {
    "tʃ": "CH", "dʒ": "JH", "aɪ": "AY", "aʊ": "AW", "ɔɪ": "OY", "eɪ": "EY", "oʊ": "OW",
    "ɜ": "ER", "ɚ": "ER", "ɝ": "ER", "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G",
    "ɡ": "G", "f": "F", "v": "V", "θ": "TH", "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH",
    "ʒ": "ZH", "h": "HH", "x": "HH", "ç": "HH", "m": "M", "n": "N", "ŋ": "NG", "l": "L",
    "ɬ": "L", "r": "R", "ɹ": "R", "j": "Y", "w": "W", "i": "IY", "ɪ": "IH", "ᵻ": "IH",
    "e": "EH", "ɛ": "EH", "æ": "AE", "a": "AE", "ɑ": "AA", "ɒ": "AA", "ɔ": "AO", "o": "OW",
    "ʊ": "UH", "u": "UW", "ʌ": "AH", "ə": "AH", "ɐ": "AH", "ɾ": "D", "ʔ": "T",
}
_IPA_KEYS = sorted(_IPA_ARPABET, key=len, reverse=True)
_ALT = re.compile(r"\(\d+\)$")


def ipa_to_arpabet(ipa: str) -> list[str]:
    """Map an espeak-ng IPA string to ARPAbet phones (stress and length marks dropped)."""
    text = re.sub(r"[ˈˌːˑ‿ \-]", "", ipa)
    phones: list[str] = []
    i = 0
    while i < len(text):
        for key in _IPA_KEYS:
            if text.startswith(key, i):
                phones.append(_IPA_ARPABET[key])
                i += len(key)
                break
        else:
            i += 1  # unknown symbol: skip
    return phones


def espeak_pronunciation(word: str) -> list[str]:
    """ARPAbet phones for ``word`` from espeak-ng (empty when espeak-ng is absent or fails)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return []
    proc = subprocess.run([exe, "-q", "--ipa", "-v", "en-us", "--stdin"], input=word,
                          capture_output=True, text=True, timeout=20, check=False)
    return ipa_to_arpabet(proc.stdout.strip()) if proc.returncode == 0 else []


@dataclass
class AlignResult:
    """Per spoken word: ``times[i]`` (start, end) seconds or None, ``confidence[i]`` nats/frame or
    None; ``phones[i]`` list of {phone, start, end} (None when the phone pass failed)."""

    times: list[tuple[float, float] | None]
    confidence: list[float | None]
    phones: list[list[dict]] | None = None
    failed: str | None = None
    oov: list[str] = field(default_factory=list)


class PocketsphinxAligner:
    """Holds the decoders (about 0.4 s and 60 MB each to load); one instance per stage actor."""

    def __init__(self, *, phones: bool = True):
        import pocketsphinx  # noqa: F401 - fail early if missing

        self.want_phones = phones
        self._align = self._new_decoder()
        self._asr = None

    @staticmethod
    def _new_decoder(**kw):
        from pocketsphinx import Decoder

        return Decoder(samprate=16000, loglevel="FATAL", **kw)

    def _decode(self, dec, pcm: bytes) -> None:
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()

    def _ensure_words(self, words: list[str]) -> tuple[list[bool], list[str]]:
        """Add out-of-vocabulary words with an espeak-ng pronunciation; returns which words are
        alignable and the list of OOV words."""
        ok, oov = [], []
        for w in words:
            if self._align.lookup_word(w) is None:
                oov.append(w)
                phones = espeak_pronunciation(w)
                if phones:
                    self._align.add_word(w, " ".join(phones), True)
            ok.append(self._align.lookup_word(w) is not None)
        return ok, oov

    def align(self, pcm: bytes, words: list[str]) -> AlignResult:
        """Force-align ``words`` (normalised spoken words) to 16 kHz mono s16le ``pcm``."""
        n = len(words)
        empty = AlignResult([None] * n, [None] * n)
        ok, oov = self._ensure_words(words)
        empty.oov = oov
        use = [i for i in range(n) if ok[i]]
        if not use:
            empty.failed = "no script word is in the pronunciation dictionary"
            return empty
        try:
            self._align.set_align_text(" ".join(words[i] for i in use))
            self._decode(self._align, pcm)
            segs = [] if self._align.hyp() is None else [
                s for s in self._align.seg() if not s.word.startswith(("<", "["))]
        except RuntimeError as exc:
            self._align = self._new_decoder()
            empty.failed = f"pocketsphinx alignment failed: {exc}"
            return empty
        # When the search cannot reach the grammar's end, pocketsphinx returns the best partial
        # path: keep it if it is a prefix of the script (the unreached words stay untimed).
        got = [_ALT.sub("", s.word) for s in segs]
        if not segs or len(segs) > len(use) or got != [words[i] for i in use[:len(segs)]]:
            self._align = self._new_decoder()  # later alignments degrade after a failed search
            empty.failed = "the audio could not be aligned to the script (no path through it)"
            return empty
        res = AlignResult([None] * n, [None] * n, oov=oov)
        if len(segs) < len(use):
            res.failed = f"partial alignment: the last {len(use) - len(segs)} words were not reached"
            self._align = self._new_decoder()
        for i, s in zip(use, segs):
            frames = s.end_frame - s.start_frame + 1
            res.times[i] = (s.start_frame * FRAME_SECONDS, (s.end_frame + 1) * FRAME_SECONDS)
            res.confidence[i] = math.log(s.ascore) / frames if s.ascore > 0 else -math.inf
        if self.want_phones and len(segs) == len(use):
            res.phones = self._phones(pcm, use, n)
        return res

    def _phones(self, pcm: bytes, use: list[int], n: int) -> list[list[dict]] | None:
        try:
            self._align.set_alignment()
            self._decode(self._align, pcm)
            # Keep the alignment object alive while its iterators are used: iterating a
            # temporary one crashes pocketsphinx 5.1.1 (segfault).
            alignment = self._align.get_alignment()
            entries = []
            for w in alignment:
                if not w.name.startswith(("<", "[")):
                    entries.append([(p.name, p.start, p.duration) for p in w])
        except RuntimeError:
            self._align = self._new_decoder()  # a failed state-alignment pass leaves it unusable
            return None
        if len(entries) != len(use):
            return None
        phones: list[list[dict]] = [[] for _ in range(n)]
        for i, plist in zip(use, entries):
            phones[i] = [{"phone": name, "start": round(start * FRAME_SECONDS, 3),
                          "end": round((start + dur) * FRAME_SECONDS, 3)}
                         for name, start, dur in plist]
        return phones

    def recognise(self, pcm: bytes) -> list[str]:
        """Free recognition with the default English LM: the words heard (no fillers)."""
        if self._asr is None:
            self._asr = self._new_decoder(**ASR_PRUNING)
        self._decode(self._asr, pcm)
        hyp = self._asr.hyp()
        if hyp is None:
            return []
        return [_ALT.sub("", w) for w in hyp.hypstr.split() if not w.startswith(("<", "["))]


#: RMS of the fixed-seed noise added before pocketsphinx decodes (about -66 dBFS): stretches of
#: digital silence (TTS output, edited audio) otherwise give degenerate log-spectra on which the
#: silence model fails and alignment finds no path.
DITHER_RMS = 0.0005


def pcm16(audio: np.ndarray) -> bytes:
    """float32 mono 16 kHz samples -> dithered 16-bit PCM for pocketsphinx."""
    noise = np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32) * DITHER_RMS
    return (np.clip(audio + noise, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
