"""Phones -> visemes -> how open the mouth is: one table for the synthetic training data
(:mod:`fixtalk.train.speech`) and for lip-sync measurement (:mod:`fixtalk.measure.phone_sync`).

Phones are ARPAbet (CMU dictionary, as pocketsphinx names them; stress digits ignored). Each
viseme class has a target mouth opening (inner-lip gap / mouth width) and a width factor; the
openings are a phonetician's rough ranking, not a measurement of any one speaker: open vowels
(AA) widest, mid vowels (AH, OW, EH) less, close vowels and most consonants a little, and the
bilabials P/B/M (and silence) closed.
"""
from __future__ import annotations

import numpy as np

#: viseme class: (target opening as inner-lip gap / mouth width, width factor)
VISEMES: dict[str, tuple[float, float]] = {
    "sil": (0.0, 1.0),
    "PBM": (0.0, 0.95),
    "FV": (0.06, 1.0),
    "TH": (0.14, 1.0),
    "DNT": (0.13, 1.0),
    "SH": (0.12, 0.85),
    "R": (0.15, 0.82),
    "W": (0.1, 0.72),
    "AA": (0.45, 1.02),
    "AH": (0.32, 1.0),
    "EH": (0.3, 1.1),
    "IY": (0.18, 1.15),
    "OW": (0.34, 0.8),
    "UW": (0.16, 0.72),
    "ER": (0.2, 0.85),
}
CLOSED_VISEMES = ("sil", "PBM")
#: viseme classes whose target opening is at least 0.3: the "open vowels" a clip's bilabial
#: closures are measured against
OPEN_VISEMES = tuple(v for v, (opening, _) in VISEMES.items() if opening >= 0.3)

PHONE_TO_VISEME: dict[str, str] = {
    "P": "PBM", "B": "PBM", "M": "PBM",
    "F": "FV", "V": "FV",
    "TH": "TH", "DH": "TH",
    "T": "DNT", "D": "DNT", "N": "DNT", "L": "DNT", "S": "DNT", "Z": "DNT", "K": "DNT",
    "G": "DNT", "NG": "DNT", "HH": "DNT", "Y": "DNT",
    "CH": "SH", "JH": "SH", "SH": "SH", "ZH": "SH",
    "R": "R", "W": "W",
    "AA": "AA", "AE": "AA", "AY": "AA", "AW": "AA",
    "AH": "AH",
    "EH": "EH", "EY": "EH",
    "IY": "IY", "IH": "IY",
    "AO": "OW", "OW": "OW", "OY": "OW",
    "UW": "UW", "UH": "UW",
    "ER": "ER",
}


def viseme_of(phone: str) -> str:
    """The viseme class of an ARPAbet phone (``"sil"`` for silence, noise and unknown names)."""
    return PHONE_TO_VISEME.get(phone.upper().rstrip("012"), "sil")


def frame_visemes(phones: list[tuple[str, float, float]], num_frames: int, fps: float) -> list[str]:
    """Per video frame, the viseme of the phone under the frame's centre ``(t + 0.5) / fps``
    (``"sil"`` where no phone is)."""
    labels = ["sil"] * num_frames
    centres = (np.arange(num_frames) + 0.5) / float(fps)
    for name, start, end in phones:
        vis = viseme_of(name)
        for t in np.nonzero((centres >= start) & (centres < end))[0]:
            labels[t] = vis
    return labels
