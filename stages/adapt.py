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
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from fixtalk.adapt import adapt, recipe_key
from pipeline.config import PipelineConfig
from stages.base import ClipError, Stage
from stages.face_crop import load_crop_landmarks
from stages.model_runtime import load_runtime


@contextmanager
def portrait_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class AdaptStage(Stage):
    """face crop -> ``adapted_checkpoint`` (see the module docstring)."""

    name = "adapt"

    def __init__(self, config: PipelineConfig):
        self.cfg = config.adapt
        self.runtime = load_runtime(config)
        self.recipe_key = recipe_key(self.cfg.recipe)

    def target(self, row: dict[str, Any]) -> Path:
        """Where the adapted checkpoint of this row's portrait lives."""
        face = Path(row["face_crop"])
        return face.parent.with_name("_adapted") / f"{face.stem}-{self.runtime.checkpoint_id}-{self.recipe_key}.pt"

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        out = self.target(row)
        with portrait_lock(out.with_suffix(".lock")):
            if not out.is_file():
                crop = np.asarray(Image.open(row["face_crop"]).convert("RGB"))
                if crop.shape[:2] != (self.runtime.size, self.runtime.size):
                    raise ClipError(f"the face crop is {crop.shape[1]}x{crop.shape[0]} but the model "
                                    f"renders {self.runtime.size}; rerun face_crop", field="portrait")
                landmarks = load_crop_landmarks(row["face_transform"])
                self.runtime.weights.use(None)  # adapt from the checkpoint's own weights
                adapt(self.runtime.model, crop, landmarks, self.cfg.recipe, out.with_suffix(".work"), out,
                      self.runtime.checkpoint_id, portrait=str(row.get("portrait") or ""), log=lambda s: None)
        return {"adapted_checkpoint": str(out)}
