"""The phones heard in speech that came without a script: pocketsphinx free recognition gives the
words, forced alignment of those words gives their phones and a confidence per word
(:mod:`stages.transcript.pocketsphinx_align`); only the phones of words aligned with confidence
(``align.pocketsphinx_min_word_confidence``) are kept, so a misheard stretch adds no phones.

English only (pocketsphinx's acoustic model); on other languages few words pass the confidence
bar and the list is short or empty, which callers treat as "no phone evidence"."""
from __future__ import annotations

import numpy as np

from fixtalk.measure.phone_sync import Phone
from stages.transcript.pocketsphinx_align import PocketsphinxAligner, pcm16


def heard_phones(samples: np.ndarray, min_confidence: float = -4.0,
                 aligner: PocketsphinxAligner | None = None, words: list[str] | None = None
                 ) -> tuple[list[str], list[Phone]]:
    """(the words heard, the phones of the confidently aligned ones) of 16 kHz mono speech; with
    ``words`` (a transcript) those words are aligned instead of the recognised ones."""
    aligner = aligner or PocketsphinxAligner(phones=True)
    pcm = pcm16(samples)
    words = list(words) if words else aligner.recognise(pcm)
    if not words:
        return [], []
    res = aligner.align(pcm, words)
    phones = [Phone(str(p["phone"]), float(p["start"]), float(p["end"]))
              for conf, plist in zip(res.confidence, res.phones or [])
              if conf is not None and conf >= min_confidence for p in plist or []]
    return words, sorted(phones, key=lambda p: p.start)
