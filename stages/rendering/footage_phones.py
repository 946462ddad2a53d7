"""What the presenter was saying in each memory frame: the visemes of the footage's own speech.

A memory frame's shape descriptor (opening, width, rounding) cannot tell an /f/ (lower lip
under the teeth) from a half-open vowel, nor pressed lips from relaxed ones; the phone the
presenter was saying there can. When the footage has an audio track, its speech is aligned
once per memory (:func:`stages.transcript.heard_phones.heard_phones`): the row's
``source_transcript`` when given (forced alignment of the words the presenter really says),
else the words pocketsphinx hears in it (English; only confidently aligned words count). Each
memory frame then carries the viseme class (:mod:`fixtalk.visemes`) of the phone at its centre,
or none, and the recall (:mod:`stages.rendering.recall`) prefers memory frames whose viseme is
the one the new speech asks for (``dub.memory.w_phone``).

Cached beside the memory as ``visemes-<source>.json`` (computed under the memory's lock).
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Sequence

import numpy as np

from fixtalk.visemes import VISEMES

#: viseme class -> code (0: no phone known there)
CODES = {name: k + 1 for k, name in enumerate(VISEMES)}


def frame_visemes(phones: Sequence, times: np.ndarray) -> np.ndarray:
    """Viseme code (:data:`CODES`) of the phone spanning each time in ``times`` (s), 0 where none.
    ``phones``: :class:`fixtalk.measure.phone_sync.Phone` (name, start, end)."""
    codes = np.zeros(len(times), np.int8)
    ordered = sorted(phones, key=lambda p: p.start)
    starts = np.array([p.start for p in ordered])
    for k, t in enumerate(np.asarray(times, np.float64)):
        i = int(np.searchsorted(starts, t, side="right")) - 1
        if i >= 0 and t < ordered[i].end:
            codes[k] = CODES.get(ordered[i].viseme, 0)
    return codes


def transcript_words(text: str) -> list[str]:
    """The words of a transcript, lower case, punctuation dropped (apostrophes kept)."""
    return re.findall(r"[a-z0-9']+", str(text).lower())


def visemes_file(folder, transcript: str | None):
    """Where a memory's visemes from ``transcript`` (None: heard) are cached."""
    tag = ("transcript-" + hashlib.sha256(transcript.encode()).hexdigest()[:12]) if transcript else "heard"
    return folder / f"visemes-{tag}.json"


def footage_visemes(memory, footage: str, transcript: str | None, log=lambda s: None
                    ) -> tuple[np.ndarray, str]:
    """(viseme code per memory frame, where the phones came from: ``transcript`` | ``heard`` |
    ``none``) of a presenter memory, computed once and cached in its folder."""
    path = visemes_file(memory.folder, transcript)
    if path.is_file():
        data = json.loads(path.read_text())
        return np.asarray(data["codes"], np.int8), str(data["source"])
    codes, source = np.zeros(len(memory), np.int8), "none"
    if memory.meta.get("has_audio") and len(memory):
        from stages.media.av import MediaError, decode_audio
        from stages.transcript.heard_phones import heard_phones

        log("presenter memory: aligning the footage's own speech")
        words = transcript_words(transcript) if transcript else None
        try:
            _, phones = heard_phones(decode_audio(footage, 16000), words=words)
        except (MediaError, RuntimeError, ValueError, OSError) as exc:
            # optional evidence: the recall goes on by shape alone, and the results say so
            log(f"presenter memory: the footage's own speech was not aligned ({exc})")
            phones = []
        fps = float(memory.meta["fps"])
        codes = frame_visemes(phones, (memory.frames + 0.5) / fps)
        source = ("transcript" if transcript else "heard") if phones else "none"
    path.write_text(json.dumps({"source": source, "codes": codes.tolist()}))
    return codes, source
