"""Face crop: one face, 68 landmarks, similarity alignment to the model's square crop.

Writes, once per portrait content (so a presenter used by thousands of rows is cropped once):

* ``OUT/work/_faces/<key>_<size>.png``  the aligned crop (model input);
* ``OUT/work/_faces/<key>_<size>.json`` the 2x3 portrait->crop matrix, landmarks, face box, score
  and the detector used, or the error when the portrait has zero or several faces (cached too).

``key`` hashes the portrait's pixels and the crop options. See :mod:`stages.alignment` for the
framing.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import FaceCropConfig, PipelineConfig
from stages.alignment import (FaceError, FaceFinder, atomic_write_text, similarity_transform,
                              transform_points, warp_to_crop)
from stages.base import ClipError, Stage, SystemicError
from stages.images import ImageError, pixel_hash, read_rgb, write_png
from stages.ingest import present, shared_dir

CACHE_VERSION = 1


@lru_cache(maxsize=8)
def checkpoint_size(path: str | None) -> int:
    """The crop side a checkpoint expects, read from its stored config without building the model
    (``mmap``: the weights are not read)."""
    import torch

    from fixtalk import checkpoints as ck

    file = Path(path) if path else ck.DEFAULT_CHECKPOINT
    if not file.is_file():
        raise SystemicError(f"checkpoint not found: {file}; set model.checkpoint (--checkpoint) or "
                            "train the default model (`make train-default`)")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        layout = ck.detect_layout(obj)
        if layout == "fixtalk":
            return int(ck.config_from_dict(obj["config"]).size)
        if layout in ("edtalk", "edtalk_lip_pose"):
            return int(ck.config_from_generator(obj["gen"]).size)
    except Exception as exc:  # noqa: BLE001 - an unusable checkpoint stops the run
        raise SystemicError(f"cannot read the model size from {file}: {exc}") from exc
    raise SystemicError(f"{file} is an Audio2Lip checkpoint, not a generator")


def crop_size(config: PipelineConfig) -> int:
    """``face_crop.size`` when set, else the checkpoint's model size."""
    if config.face_crop.size:
        return int(config.face_crop.size)
    return checkpoint_size(config.model.checkpoint)


def make_finder(cfg: FaceCropConfig) -> FaceFinder:
    """A :class:`FaceFinder` from the config section (a missing face-alignment cache is systemic)."""
    rotations = tuple(float(a) for a in str(cfg.rotations or "").split(",") if a.strip())
    try:
        return FaceFinder(cfg.backend, detect_max_side=cfg.detect_max_side,
                          min_face_score=cfg.min_face_score, minor_face_area=cfg.minor_face_area,
                          minor_face_score=cfg.minor_face_score, rotations=rotations,
                          device=cfg.face_alignment_device)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemicError(str(exc)) from exc


def fixed_video_transform(finder: FaceFinder, frames: list[np.ndarray], size: int,
                          cfg: FaceCropConfig) -> np.ndarray | None:
    """One crop transform for a whole driving video, from the median landmarks of sampled frames.

    A fixed crop (as in FOMM / EDTalk video crops) keeps the head's own motion inside the crop,
    which is what pose driving needs; re-aligning every frame would remove it. None when no sampled
    frame has a face.
    """
    found = [f.landmarks for f in (finder.largest(fr) for fr in frames) if f is not None]
    if not found:
        return None
    return similarity_transform(np.median(np.stack(found), axis=0), size, cfg.crop_scale,
                                cfg.center_shift)


class FaceCropStage(Stage):
    """Detect the portrait's one face and cut the aligned crop (cached per portrait)."""

    name = "face_crop"

    def __init__(self, config: PipelineConfig):
        self.cfg = config.face_crop
        self.size = crop_size(config)
        self.max_image_side = int(config.ingest.max_image_side)  # as ingest reads portraits
        self.finder = make_finder(self.cfg)

    def cache_key(self, portrait_hash: str) -> str:
        c = self.cfg
        text = (f"{portrait_hash}|{c.backend}|{c.crop_scale}|{c.center_shift}|{c.min_face_score}|"
                f"{c.minor_face_area}|{c.minor_face_score}|{c.rotations}|v{CACHE_VERSION}")
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        rgb = None
        if present(row.get("portrait_image")) and present(row.get("portrait_hash")):
            digest = str(row["portrait_hash"])
        else:  # run without ingest: read the portrait here
            rgb = self._read(row)
            digest = pixel_hash(rgb)
        stem = shared_dir(row, "_faces") / f"{self.cache_key(digest)}_{self.size}"
        meta_path, crop_path = stem.with_suffix(".json"), stem.with_suffix(".png")
        cached = meta_path.is_file() and (crop_path.is_file() or "error" in _read_json(meta_path))
        if cached:
            meta = _read_json(meta_path)
        else:
            if rgb is None:
                rgb = self._read(row, row.get("portrait_image"))
            meta = self._crop(rgb, crop_path)
            atomic_write_text(meta_path, json.dumps(meta, indent=1))
        if "error" in meta:
            raise ClipError(meta["error"], field="portrait", error_type=meta["error_type"])
        return {"face_crop": str(crop_path), "face_transform": str(meta_path),
                "crop_size": self.size, "face_score": meta["score"], "face_angle": meta["angle"],
                "faces_ignored": meta["ignored"], "face_backend": meta["backend"],
                "face_cached": bool(cached)}

    def _read(self, row: dict[str, Any], path: str | None = None) -> np.ndarray:
        try:
            return read_rgb(path or row["portrait"], max_side=None if path else self.max_image_side,
                            even=True)
        except (ImageError, TypeError) as exc:
            raise ClipError(str(exc), field="portrait", error_type="UnreadableImage") from exc

    def _crop(self, rgb: np.ndarray, crop_path: Path) -> dict[str, Any]:
        base = {"backend": self.cfg.backend, "size": self.size,
                "image_width": int(rgb.shape[1]), "image_height": int(rgb.shape[0])}
        try:
            det = self.finder.find_one(rgb)
        except FaceError as exc:
            kind = "NoFace" if exc.count == 0 else "SeveralFaces"
            return {**base, "error": str(exc), "error_type": kind, "faces": exc.count}
        matrix = similarity_transform(det.face.landmarks, self.size, self.cfg.crop_scale,
                                      self.cfg.center_shift)
        write_png(crop_path, warp_to_crop(rgb, matrix, self.size))
        return {**base, "matrix": matrix.tolist(), "box": list(det.face.box),
                "score": round(det.face.score, 4), "angle": det.angle, "ignored": len(det.ignored),
                "landmarks": np.round(det.face.landmarks, 2).tolist(),
                "crop_landmarks": np.round(transform_points(matrix, det.face.landmarks), 2).tolist()}


def load_transform(path: str | Path) -> tuple[np.ndarray, int, tuple[int, int]]:
    """(2x3 portrait->crop matrix, crop size, (image width, image height)) from a face JSON."""
    meta = _read_json(Path(path))
    return (np.asarray(meta["matrix"], dtype=np.float64), int(meta["size"]),
            (int(meta["image_width"]), int(meta["image_height"])))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
