"""Portrait adaptation: fine-tune a trained FixTalk to one presenter's portrait before rendering.

Why. FixTalk inherits LIA/EDTalk's design: the decoder G generates the flow phi from the latent, so
the presenter's face geometry must be read off one code learnt on the training faces. A model
trained on few faces moves an unseen face inaccurately: the shipped default's flow misses the true
motion by 1.8 px on its held-out face (docs/model_card.md). One-shot personalisation, as in
few-shot talking-head models (Zakharov et al., ICCV 2019: fine-tuning on the target person) and
MetaPortrait (CVPR 2023: fast personalisation), closes most of that gap for the presenter at hand.

How. Only the portrait is used (never the clip's audio or driving video):

1. :func:`portrait_clips`: the aligned portrait crop I_s and its 68 landmarks are made to move by
   the synthetic self-driven model of :mod:`fixtalk.train.synthetic` (head yaw/pitch/roll, scale,
   shift, blinks, and a mouth track drawn from random syllables); every frame's warp is known.
   Without ``shift`` (default) the head turns, tilts and scales in place: a driving video's
   shift is put back rigidly after the generator (:mod:`fixtalk.shift_stitching`), so the
   adaptation spends its steps on the turn, which a shift would otherwise be confused with.
   With ``partial_clips`` (default), one clip in three moves only the head and one only the
   lips, and those are rendered from the *source's* weights for the banks they do not move
   (:func:`fixtalk.train.stage_steps.partial_drive`): each bank must carry its own motion, as
   pose-only (a pose video) and lips-only (audio) driving need.
2. :func:`adapt`: a short run of the trainer's ``base`` stage on those clips: self-reconstruction
   (L1 + perceptual + mouth-box L1 + lip-track), rendered with relative flow as the pipeline
   renders (the generator learns f_d - f_s for this face), training all but Audio2Lip, plus the
   bank ``invariance`` term (:func:`fixtalk.train.stage_steps.invariance_term`): the lip and
   expression weights the encoder reads off a pose-only frame must be the portrait's, and the
   pose weights of a lips-only frame too. Without it the shipped model's lip bank carries the
   head's yaw and a pose video's yaw never reaches the render (docs/model_card.md). The run is
   resumable (a killed adaptation continues from its last state) and seeded.
3. The result is a full checkpoint of our format whose training record names the base checkpoint
   (:func:`adaptation_record`); :func:`apply_adapted` swaps its weights into a loaded model and
   refuses one adapted from another checkpoint.

Settings: :class:`fixtalk.config.AdaptConfig`. Cost: ``steps`` training steps with relative flow
(the default 300 took 4.2 to 7.3 minutes
on 2-core CPUs, by host: docs/performance.md; far less on a GPU), once per portrait.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fixtalk.checkpoints import save_checkpoint
from fixtalk.config import AdaptConfig, StageConfig, TrainConfig
from fixtalk.model import FixTalk

ADAPT_FORMAT = "fixtalk-adapted/1"

#: Phones that random syllables are drawn from (consonant, vowel), all mapped to visemes.
_ONSETS = ("P", "B", "M", "F", "V", "TH", "T", "D", "S", "Z", "SH", "K", "G", "L", "R", "W", "Y", "N", "HH")
_VOWELS = ("AA", "AE", "AH", "AO", "EH", "ER", "IY", "IH", "OW", "UW", "UH", "AY", "EY", "AW", "OY")


def random_phones(rng: np.random.Generator, seconds: float) -> list[tuple[str, float, float]]:
    """Speech-like phone timings (phone, start_s, end_s) over ``seconds``: consonant-vowel
    syllables of 60-140 / 90-220 ms in phrases of 3-12 syllables, separated by 0.2-0.7 s pauses.
    They drive the mouth track of an adaptation clip (no audio is needed for it)."""
    out: list[tuple[str, float, float]] = []
    t = float(rng.uniform(0.1, 0.5))
    while t < seconds - 0.3:
        for _ in range(int(rng.integers(3, 13))):
            for pool, lo, hi in ((_ONSETS, 0.06, 0.14), (_VOWELS, 0.09, 0.22)):
                d = float(rng.uniform(lo, hi))
                out.append((pool[int(rng.integers(len(pool)))], t, t + d))
                t += d
        t += float(rng.uniform(0.2, 0.7))
    return [p for p in out if p[1] < seconds]


def portrait_clips(crop: np.ndarray, landmarks: np.ndarray, out: str | Path, cfg: AdaptConfig,
                   fps: int = 25) -> list[Path]:
    """Write ``cfg.clips`` synthetic clips of the portrait ``crop`` (S,S,3 uint8, the model's
    input) with its 68 ``landmarks`` in crop pixels, in the training data format, under ``out``."""
    import cv2

    from fixtalk.train.data_format import SAMPLES_PER_FRAME, write_clip
    from fixtalk.train.speech import viseme_track
    from fixtalk.train.synthetic import motion_tracks, render_tracks

    size = int(crop.shape[0])
    # render_frame samples from an oversampled portrait (2x), as the training set does
    base = cv2.resize(np.ascontiguousarray(crop), (2 * size, 2 * size), interpolation=cv2.INTER_CUBIC)
    lm = np.asarray(landmarks, np.float64)
    rng = np.random.default_rng(cfg.seed)
    n = max(8, int(round(cfg.clip_seconds * fps)))
    written = []
    for i in range(int(cfg.clips)):
        labels, mouth_open, width = viseme_track(random_phones(rng, n / fps), n,
                                                 amplitude=float(rng.uniform(0.8, 1.25)))
        tracks = motion_tracks(rng, n, still=bool(rng.random() < 0.25))
        tracks["mouth_open"] = mouth_open.astype(np.float64)
        tracks["mouth_width"] = width.astype(np.float64)
        if not cfg.shift:  # the head turns, tilts and scales in place (fixtalk.shift_stitching)
            tracks["tx"], tracks["ty"] = np.zeros(n), np.zeros(n)
        drive = ("all", "pose", "lip")[i % 3] if cfg.partial_clips else "all"
        if drive == "pose":  # the head moves, the mouth and eyes stay as in the portrait
            tracks.update(mouth_open=np.zeros(n), mouth_width=np.ones(n), blink=np.zeros(n))
            labels = ["sil"] * n
        elif drive == "lip":  # the lips move, the head and eyes stay
            for k in ("yaw", "pitch", "roll", "tx", "ty", "blink"):
                tracks[k] = np.zeros(n)
            tracks["scale"] = np.ones(n)
        frames, lms = render_tracks(base, lm, tracks, size)
        meta = {"kind": "synthetic", "split": "train", "identity": "portrait", "drive": drive,
                "source": "portrait adaptation (fixtalk.adapt)", "visemes": labels,
                "tracks": {k: [round(float(x), 5) for x in v] for k, v in tracks.items()}}
        written.append(write_clip(Path(out) / f"train_{i:04d}", frames,
                                  np.zeros(n * SAMPLES_PER_FRAME, np.float32), lms, meta))
    return written


def adaptation_stages(cfg: AdaptConfig) -> list[StageConfig]:
    """The trainer stage(s) of an adaptation (see the module docstring)."""
    return [StageConfig(name="base", steps=int(cfg.steps), batch_size=int(cfg.batch_size), lr=float(cfg.lr),
                        lr_schedule=cfg.lr_schedule, warmup_steps=int(cfg.warmup_steps), l1=1.0, perceptual=1.0, mouth=float(cfg.mouth), track=float(cfg.track),
                        pose_track=float(cfg.pose_track), invariance=float(cfg.invariance),
                        flow=float(cfg.flow), frozen=cfg.frozen)]


def recipe_key(cfg: AdaptConfig) -> str:
    """Short hash of the settings that change an adaptation's result (not threads or the
    checkpoint interval): adapted files are cached under it."""
    import hashlib
    import json

    used = {k: v for k, v in asdict(cfg).items() if k not in ("num_threads", "checkpoint_minutes")}
    return hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()[:10]


def adaptation_record(base_id: str, cfg: AdaptConfig, portrait: str) -> dict:
    """The training record an adapted checkpoint carries (checked by :func:`apply_adapted`)."""
    return {"format": ADAPT_FORMAT, "base_checkpoint": base_id, "portrait": portrait,
            "adapt": asdict(cfg)}


def adapt(model: FixTalk, crop: np.ndarray, landmarks: np.ndarray, cfg: AdaptConfig, work: str | Path,
          out: str | Path, base_id: str, portrait: str = "",
          log: Callable[[str], None] = print) -> Path:
    """Fine-tune a copy of ``model`` to the portrait ``crop`` and write it to ``out``.

    ``work`` holds the clips and the resumable trainer state (rerunning the same call after a crash
    continues where it stopped) and is removed at the end; ``base_id`` is the checkpoint id of
    ``model`` (recorded, and checked when the result is applied). ``model`` itself is not changed.
    """
    work = Path(work)
    data = work / "clips"
    if not (work / "clips.done").is_file():
        shutil.rmtree(data, ignore_errors=True)
        portrait_clips(crop, landmarks, data, cfg)
        (work / "clips.done").write_text("ok\n")
    record = adaptation_record(base_id, cfg, portrait)
    return fine_tune(model, data, adaptation_stages(cfg), cfg, work, out, record, log)


def train_config(model: FixTalk, stages: list[StageConfig], cfg) -> TrainConfig:
    """The trainer settings of a fine-tuning run of ``model`` through ``stages`` (``cfg``, an
    AdaptConfig or FootageFitConfig, gives seed, relative_flow, num_threads, checkpoint_minutes)."""
    return TrainConfig(preset=model.cfg.name, seed=int(cfg.seed), device=str(next(model.parameters()).device),
                       relative_flow=bool(cfg.relative_flow),
                       num_threads=int(cfg.num_threads) or (os.cpu_count() or 1),
                       checkpoint_minutes=float(cfg.checkpoint_minutes), log_every=50, stages=stages)


def fine_tune(model: FixTalk, data: Path, stages: list[StageConfig], cfg, work: Path, out: str | Path,
              record: dict, log: Callable[[str], None]) -> Path:
    """Train a copy of ``model`` on the clips under ``data`` through ``stages`` (resumable state
    in ``work/train``; ``cfg`` gives seed, relative_flow, num_threads, checkpoint_minutes), save
    it to ``out`` with the training ``record`` and remove ``work``."""
    from fixtalk.train.trainer import Trainer

    tcfg = train_config(model, stages, cfg)
    threads = torch.get_num_threads()
    trainer = Trainer(tcfg, data, Path(work) / "train", log=log, model=copy.deepcopy(model))
    try:
        while trainer.stage_index < len(tcfg.stages):
            trainer.run_stage(tcfg.stages[trainer.stage_index])
    finally:
        torch.set_num_threads(threads)
    trainer.model.eval()
    record = {**record, "final_losses": trainer.rows[-1] if trainer.rows else {}}
    path = save_checkpoint(out, trainer.model, training=record)
    shutil.rmtree(work, ignore_errors=True)
    return path


def adapt_cached(model: FixTalk, crop: np.ndarray, landmarks: np.ndarray, cfg: AdaptConfig, out: Path,
                 base_id: str, portrait: str = "", log: Callable[[str], None] = print) -> Path:
    """``out`` if it exists, else :func:`adapt` into it with its clips in a temporary folder
    (never among a data folder's clips); logs the time taken."""
    if not out.is_file():
        t0 = time.monotonic()
        log(f"[adapt] {portrait or 'portrait'}: {cfg.steps} steps -> {out}")
        with tempfile.TemporaryDirectory(prefix="fixtalk-adapt-") as work:
            adapt(model, crop, landmarks, cfg, Path(work) / "run", out, base_id, portrait=portrait,
                  log=lambda s: None)
        log(f"[adapt] done in {time.monotonic() - t0:.0f} s")
    return out


def apply_adapted(model: FixTalk, path: str | Path | None, base_state: dict[str, torch.Tensor],
                  base_id: str) -> None:
    """Load the adapted weights of ``path`` into ``model`` in place, or restore ``base_state``
    (the model's own weights, kept by the caller) when ``path`` is None. An adapted checkpoint
    made from another base checkpoint is refused (ValueError)."""
    if path is None:
        model.load_state_dict(base_state)
        return
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    record = obj.get("training", {}) if isinstance(obj, dict) else {}
    if record.get("format") != ADAPT_FORMAT:
        raise ValueError(f"{path} is not an adapted checkpoint (format {record.get('format')!r})")
    if record.get("base_checkpoint") != base_id:
        raise ValueError(f"{path} was adapted from checkpoint {record.get('base_checkpoint')}, "
                         f"not from the loaded {base_id}; delete it to adapt again")
    model.load_state_dict(obj["state_dict"])
