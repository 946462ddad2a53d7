"""Fitting the model to a presenter from their footage (EDTalk's "fine-tune on a specific
person"; the FixTalk paper's generator is trained the same way, on real video).

Where a presenter's footage exists it is the best data this project has: real frames of the
real face in real motion, with its own speech. Given the footage's aligned crops at 25 fps
(:class:`FootageSegment`: runs of frames where the face was tracked, their 68 landmarks in crop
pixels and, when the footage has sound, its 16 kHz speech):

1. the segments are cut into clips of ``clip_seconds`` in the training data format
   (:mod:`fixtalk.train.data_format`, ``kind: video``);
2. ``steps`` of the trainer's ``base`` stage: self-reconstruction, each frame rendered from
   another frame of the same footage (L1 + perceptual + mouth-box L1), with relative flow as the
   pipeline renders; only the decoder G trains (``train="decoder"``: its flow fields and
   synthesis learn this face, the encoder's bank weights keep their meaning) or every generator
   part (``"generator"``);
3. optionally (``lip_steps`` > 0, off by default), with speech, the ``audio2lip`` stage:
   Audio2Lip regressed on the footage's own sound against the encoder's lip weights alpha_lip of
   its frames, so the audio drives this presenter's mouth as it moves in the footage. With the
   shipped small model this regression shrinks the predicted lip weights toward their mean: a
   dub's mouth moved a fifth as much (docs/model_card.md), so it is left to models whose
   Audio2Lip has more to learn from a few minutes of speech.

The result is an adapted checkpoint (:data:`fixtalk.adapt.ADAPT_FORMAT`, applied with
:func:`fixtalk.adapt.apply_adapted`); the run resumes after a crash like a portrait adaptation.
Settings: :class:`fixtalk.config.FootageFitConfig`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fixtalk.adapt import ADAPT_FORMAT, fine_tune
from fixtalk.config import FootageFitConfig, StageConfig
from fixtalk.model import FixTalk

#: Audio2Lip reads windows of 5 frames: shorter clips are not written.
MIN_CLIP_FRAMES = 8


@dataclass
class FootageSegment:
    """A run of tracked footage frames at 25 fps: ``frames`` (n, S, S, 3) uint8 model crops,
    ``landmarks`` (n, 68, 2) in crop pixels, ``audio`` (n * 640,) float32 16 kHz or None."""

    frames: np.ndarray
    landmarks: np.ndarray
    audio: np.ndarray | None = None


def fitting_stages(cfg: FootageFitConfig, has_speech: bool) -> list[StageConfig]:
    """The trainer stages of a fit (see the module docstring)."""
    if cfg.train not in ("decoder", "generator"):
        raise ValueError(f"adapt.footage.train={cfg.train!r}: expected decoder or generator")
    stages = [StageConfig(name="base", steps=int(cfg.steps), batch_size=int(cfg.batch_size),
                          lr=float(cfg.lr), lr_schedule=cfg.lr_schedule, warmup_steps=int(cfg.warmup_steps),
                          l1=1.0, perceptual=1.0, mouth=float(cfg.mouth),
                          trainable="dec." if cfg.train == "decoder" else "")]
    if has_speech and int(cfg.lip_steps) > 0:
        stages.append(StageConfig(name="audio2lip", steps=int(cfg.lip_steps),
                                  batch_size=int(cfg.batch_size), lr=float(cfg.lip_lr), window=5,
                                  image=0.0))
    return stages


def write_footage_clips(segments: list[FootageSegment], out: str | Path, cfg: FootageFitConfig,
                        name: str = "footage") -> list[Path]:
    """Each segment cut into clips of ``cfg.clip_seconds`` (the remainder joins the last one)."""
    from fixtalk.train.data_format import SAMPLES_PER_FRAME, fit_audio, write_clip

    per_clip = max(MIN_CLIP_FRAMES, int(round(float(cfg.clip_seconds) * 25)))
    written = []
    for k, seg in enumerate(segments):
        n = len(seg.frames)
        starts = list(range(0, max(n - MIN_CLIP_FRAMES + 1, 1), per_clip))
        for c, a in enumerate(starts):
            b = n if c == len(starts) - 1 else a + per_clip
            if b - a < MIN_CLIP_FRAMES:
                continue
            audio = (np.zeros((b - a) * SAMPLES_PER_FRAME, np.float32) if seg.audio is None
                     else fit_audio(seg.audio[a * SAMPLES_PER_FRAME:b * SAMPLES_PER_FRAME], b - a))
            meta = {"kind": "video", "split": "train", "identity": name, "source": name,
                    "licence": "the user's footage", "segment": [int(a), int(b)],
                    "has_speech": seg.audio is not None}
            written.append(write_clip(Path(out) / f"train_{k:03d}_{c:03d}", seg.frames[a:b],
                                      audio, seg.landmarks[a:b], meta))
    if not written:
        raise ValueError(f"the footage has no run of {MIN_CLIP_FRAMES} or more tracked frames to "
                         "fit the model on")
    return written


def fit_record(base_id: str, cfg: FootageFitConfig, footage: str) -> dict:
    """The training record a fitted checkpoint carries (checked by ``apply_adapted``)."""
    return {"format": ADAPT_FORMAT, "base_checkpoint": base_id, "footage": footage,
            "footage_fit": asdict(cfg)}


def fit_footage(model: FixTalk, segments: list[FootageSegment], cfg: FootageFitConfig,
                work: str | Path, out: str | Path, base_id: str, footage: str = "",
                log: Callable[[str], None] = print) -> Path:
    """Fine-tune a copy of ``model`` on the footage ``segments`` and write it to ``out``
    (``work``: clips and resumable trainer state, removed at the end; ``model`` is unchanged)."""
    work = Path(work)
    data = work / "clips"
    if not (work / "clips.done").is_file():
        import shutil

        shutil.rmtree(data, ignore_errors=True)
        write_footage_clips(segments, data, cfg)
        (work / "clips.done").write_text("ok\n")
    has_speech = any(s.audio is not None and np.abs(s.audio).max() > 1e-3 for s in segments)
    return fine_tune(model, data, fitting_stages(cfg, has_speech), cfg, work, out,
                     fit_record(base_id, cfg, footage), log)
