"""Adapt: the network fine-tuned to each presenter's portrait (:mod:`fixtalk.adapt`), once per
portrait, before the motion and render stages use it.

Writes ``OUT/work/_adapted/<face key>-<checkpoint id>-<recipe>.pt`` (an adapted checkpoint of our
format) and sets the row's ``adapted_checkpoint``; every clip of that portrait, in this run and in
later runs with the same model and recipe, reuses the file. While a portrait is being adapted, its
resumable state lives in ``<file>.work/`` (a killed run continues from it) and a lock file keeps
two actors from adapting the same portrait at once: the second waits and then reuses the result.

``adapt.enabled`` puts the stage in the DAG: ``auto`` (the default) when the shipped default model
renders, where it makes the render far closer to the target, the mouth move more and a pose video
move the head (docs/model_card.md); ``true`` for any checkpoint (with one trained on real video,
adaptation on synthetic motion is unevaluated); ``false`` never. Without the stage, rows render
with the checkpoint's own weights.

A dub whose mouth is recalled from its footage (``dub.mouth``, :mod:`stages.rendering.memory_dub`)
builds the presenter memory here and is not fitted. Otherwise a presenter with footage
(``presenter_video``, else a dub's ``source_video``) is fitted on that
footage instead (``adapt.footage``, :mod:`fixtalk.footage_fit` with :mod:`stages.rendering.presenter_fit`):
``OUT/work/_adapted/footage-<key>-<checkpoint id>.pt``, once per footage content, fitting options
and checkpoint, with the same lock and resumable state.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fixtalk.adapt import adapt, recipe_key
from fixtalk.footage_fit import fit_footage
from stages.base import ClipError, Stage
from stages.config import PipelineConfig
from stages.face.track import FaceTrack, FaceTracker
from stages.face_crop import load_crop_landmarks, make_finder
from stages.ingest import FOOTAGE_VIDEOS, present, shared_dir
from stages.media.footage import cached_track, content_hash
from stages.media.locks import file_lock
from stages.rendering.memory_dub import choose_mouth
from stages.rendering.presenter_fit import footage_segments
from stages.rendering.runtime import load_runtime


class AdaptStage(Stage):
    """face crop -> ``adapted_checkpoint`` (see the module docstring)."""

    name = "adapt"

    def __init__(self, config: PipelineConfig):
        self.cfg = config.adapt
        self.runtime = load_runtime(config)
        self.recipe_key = recipe_key(self.cfg.recipe)
        self.footage_cfg = config.adapt.footage
        self.track_cfg, self.crop_cfg = config.dub.track, config.face_crop
        self.dub_cfg = config.dub

    def target(self, row: dict[str, Any]) -> Path:
        """Where the adapted checkpoint of this row's portrait lives."""
        face = Path(row["face_crop"])
        return face.parent.with_name("_adapted") / f"{face.stem}-{self.runtime.checkpoint_id}-{self.recipe_key}.pt"

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        field = self.footage_field(row)
        if field == "source_video" and present(row.get("footage_track")):
            # a dub whose mouth is recalled from its footage needs no fitted weights
            choice = choose_mouth(row, self.dub_cfg, shared_dir(row, "_memory"))
            if choice.mode == "memory":
                return {"adapted_checkpoint": None, "adapted_from": None, **choice.columns()}
        if field is not None:
            return self._fit_footage(row, field)
        out = self.target(row)
        with file_lock(out.with_suffix(".lock")):
            if not out.is_file():
                crop = np.asarray(Image.open(row["face_crop"]).convert("RGB"))
                if crop.shape[:2] != (self.runtime.size, self.runtime.size):
                    raise ClipError(f"the face crop is {crop.shape[1]}x{crop.shape[0]} but the model "
                                    f"renders {self.runtime.size}; rerun face_crop", field="portrait")
                landmarks = load_crop_landmarks(row["face_transform"])
                self.runtime.weights.use(None)  # adapt from the checkpoint's own weights
                adapt(self.runtime.model, crop, landmarks, self.cfg.recipe, out.with_suffix(".work"), out,
                      self.runtime.checkpoint_id, portrait=str(row.get("portrait") or ""), log=lambda s: None)
        return {"adapted_checkpoint": str(out), "adapted_from": "portrait"}

    # -- footage -----------------------------------------------------------------------------
    def footage_field(self, row: dict[str, Any]) -> str | None:
        """The footage the row's presenter is fitted on (``presenter_video``, else a dub's
        ``source_video``), or None (portrait adaptation)."""
        if not self.footage_cfg.enabled:
            return None
        return next((f for f in ("presenter_video", "source_video") if present(row.get(f))), None)

    def _fit_footage(self, row: dict[str, Any], field: str) -> dict[str, Any]:
        prefix = FOOTAGE_VIDEOS[field]
        path, rate = row[field], str(row.get(f"{prefix}_rate") or "25/1")
        track_path, track = self._track(row, field, path, rate)
        fit = self.footage_cfg
        key = hashlib.sha256(json.dumps([content_hash(path), rate, track.size, asdict(fit)], sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
        out = shared_dir(row, "_adapted") / f"footage-{key}-{self.runtime.checkpoint_id}.pt"
        with file_lock(out.with_suffix(".lock")):
            if not out.is_file():
                segments = footage_segments(path, rate, track, bool(row.get(f"{prefix}_has_audio")),
                                            float(fit.holdout), int(fit.max_frames), field)
                self.runtime.weights.use(None)  # fit from the checkpoint's own weights
                fit_footage(self.runtime.model, segments, fit, out.with_suffix(".work"), out,
                            self.runtime.checkpoint_id, footage=str(path), log=lambda s: None)
        return {"adapted_checkpoint": str(out), "adapted_from": field, "presenter_track": str(track_path)}

    def _track(self, row: dict[str, Any], field: str, path: str, rate: str):
        if field == "source_video" and present(row.get("footage_track")):
            return row["footage_track"], FaceTrack.load(row["footage_track"])
        crop = self.crop_cfg
        tracker = FaceTracker(make_finder(crop), self.track_cfg, self.runtime.size, crop.crop_scale,
                              crop.center_shift)
        track_path, track, _ = cached_track(path, field, rate, shared_dir(row, "_tracks"), tracker,
                                            self.track_cfg)
        return track_path, track
