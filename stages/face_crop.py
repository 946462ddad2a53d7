"""Face crop: one face, 68 landmarks, similarity alignment to the model's square crop.

Writes, once per portrait content (so a presenter used by thousands of rows is cropped once):

* ``OUT/work/_faces/<key>_<size>.png``  the aligned crop (model input);
* ``OUT/work/_faces/<key>_<size>.json`` the 2x3 portrait->crop matrix, landmarks, face box, score
  and the detector used, or the error when the portrait has zero or several faces (cached too).

``key`` hashes the portrait's pixels and the crop options. See :mod:`stages.face.alignment` for the
framing.

Hostile portraits: faces rolled in-plane (up to upside down) are found by the rotation tries of
``face_crop.rotations``; a face rolled more than ``face_crop.upright_roll`` degrees has its
landmarks re-fitted on an upright copy (dlib's 68-point model is trained on upright faces, and a
rolled fit tilts the crop by several degrees). A face narrower than ``face_crop.min_face_px`` is
refused (``FaceTooSmall``) rather than upscaled into a blur; when nothing is found in a small
picture, a finer detection pass tells "too small" apart from "no face". Every refusal names the
``portrait`` field and says what picture to give instead.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fixtalk.measure.faces import Face, face_width
from stages.base import ClipError, Stage, SystemicError
from stages.config import FaceCropConfig, PipelineConfig
from stages.face.alignment import (
    Detection,
    FaceError,
    FaceFinder,
    atomic_write_text,
    similarity_transform,
    transform_points,
    warp_to_crop,
)
from stages.face.track import FaceTracker
from stages.ingest import present, shared_dir
from stages.media.footage import cached_track, read_frame
from stages.media.images import ImageError, pixel_hash, read_rgb, write_png

CACHE_VERSION = 2
#: Longest side (after ``detect_max_side`` scaling) below which a no-face picture gets a finer
#: (2x upsampled) detection pass, to tell a too-small face from no face.
FINE_PASS_MAX_SIDE = 1000


class PortraitFaceError(ValueError):
    """The portrait cannot give one usable face: ``kind`` is NoFace, SeveralFaces or
    FaceTooSmall; ``count`` the number of faces found."""

    def __init__(self, message: str, kind: str, count: int):
        super().__init__(message)
        self.kind = kind
        self.count = count


def face_roll(landmarks: np.ndarray) -> float:
    """In-plane angle (degrees) of the line from the face's left-in-image eye to the other eye
    (68-point eyes 36-41 and 42-47); positive when the face is turned clockwise on screen."""
    pts = np.asarray(landmarks, dtype=np.float64)
    e = pts[42:48].mean(0) - pts[36:42].mean(0)
    return float(np.degrees(np.arctan2(e[1], e[0])))


def upright_refit(finder: FaceFinder, rgb: np.ndarray, face: Face, min_roll: float,
                  rounds: int = 2) -> Face:
    """``face`` with landmarks re-fitted on a copy of its neighbourhood turned upright.

    The neighbourhood (3x the face) is rotated by the face's roll about the face centre, the face
    is detected again there (the one nearest the centre; else the landmarks' box is used) and its
    landmarks are mapped back. Repeated while the residual roll exceeds ``min_roll``.
    """
    for _ in range(rounds):
        roll = face_roll(face.landmarks)
        if abs(roll) < min_roll:
            break
        centre = face.landmarks.mean(0)
        side = int(np.clip(3 * face_width(face.landmarks), 96, 1600))
        turn = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), roll, 1.0)
        turn[:, 2] += side / 2 - centre
        patch = cv2.warpAffine(rgb, turn, (side, side), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        moved = transform_points(turn, face.landmarks)
        found = finder.detect(patch, 1 if face_width(face.landmarks) < 120 else 0)
        near = [f for f in found if _box_contains(f.box, side / 2, side / 2)]
        if near:
            fitted = min(near, key=lambda f: np.hypot(*(f.landmarks.mean(0) - side / 2)))
            pts = fitted.landmarks
        else:
            pts = finder.refine(patch, Face(_box_of(moved[17:]), moved, face.score)).landmarks
        back = transform_points(cv2.invertAffineTransform(turn), pts)
        face = Face(face.box, back, face.score)
    return face


def locate_face(finder: FaceFinder, rgb: np.ndarray, cfg: FaceCropConfig,
                scale_note: str = "") -> Detection:
    """The portrait's one usable face, landmarks re-fitted upright when rolled.

    Raises :class:`PortraitFaceError` (message with the fix) for zero or several faces or a face
    narrower than ``cfg.min_face_px``.
    """
    h, w = rgb.shape[:2]
    minimum = int(cfg.min_face_px)
    try:
        det = finder.find_one(rgb)
    except FaceError as exc:
        if exc.count > 0:
            raise PortraitFaceError(str(exc), "SeveralFaces", exc.count) from exc
        det = _fine_pass(finder, rgb)
        if det is None:
            raise PortraitFaceError(
                f"no face found in the {w}x{h} picture{scale_note}; give a photo with one clearly "
                f"visible, roughly frontal face at least {minimum} px wide", "NoFace", 0) from exc
    width = face_width(det.face.landmarks)
    if width < minimum:
        raise PortraitFaceError(
            f"face too small: it is {width:.0f} px wide in the {w}x{h} picture{scale_note}, the "
            f"minimum is {minimum} px (face_crop.min_face_px); give a closer or higher-resolution "
            "photo of the presenter", "FaceTooSmall", 1)
    det.face = upright_refit(finder, rgb, det.face, float(cfg.upright_roll))
    return det


def _fine_pass(finder: FaceFinder, rgb: np.ndarray) -> Detection | None:
    """A 2x-upsampled detection on small pictures (finds faces down to about 20 px)."""
    h, w = rgb.shape[:2]
    if max(h, w) * min(1.0, finder.detect_max_side / max(h, w)) > FINE_PASS_MAX_SIDE:
        return None
    counted, ignored = finder.split(finder.detect(rgb, 2))
    if not counted:
        return None
    if len(counted) > 1:
        boxes = ", ".join(str(tuple(f.box)) for f in counted)
        raise PortraitFaceError(f"{len(counted)} faces found (boxes {boxes}); expected exactly "
                                "one presenter: crop the picture to one person", "SeveralFaces",
                                len(counted))
    return Detection(face=counted[0], angle=0.0, ignored=ignored)


def _box_contains(box: tuple[int, int, int, int], x: float, y: float) -> bool:
    l, t, r, b = box
    return l <= x <= r and t <= y <= b


def _box_of(pts: np.ndarray) -> tuple[int, int, int, int]:
    l, t = np.floor(pts.min(0)).astype(int)
    r, b = np.ceil(pts.max(0)).astype(int)
    return int(l), int(t), int(r), int(b)


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
        self.track_cfg = config.dub.track

    def cache_key(self, portrait_hash: str) -> str:
        c = self.cfg
        text = (f"{portrait_hash}|{c.backend}|{c.crop_scale}|{c.center_shift}|{c.min_face_score}|"
                f"{c.minor_face_area}|{c.minor_face_score}|{c.rotations}|{c.min_face_px}|"
                f"{c.upright_roll}|v{CACHE_VERSION}")
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        footage: dict[str, Any] = {}
        if present(row.get("source_video")):
            footage = self._footage(row)
            row = {**row, **footage}
        return {**footage, **self._portrait_crop(row)}

    def _footage(self, row: dict[str, Any]) -> dict[str, Any]:
        """Track the dub's footage (cached); without a portrait, its reference frame is one."""
        tracker = FaceTracker(self.finder, self.track_cfg, self.size, self.cfg.crop_scale,
                              self.cfg.center_shift)
        rate = str(row.get("source_rate") or "25/1")
        path, track, ref = cached_track(row["source_video"], "source_video", rate,
                                        shared_dir(row, "_tracks"), tracker, self.track_cfg)
        counts = track.counts()
        out = {"footage_track": str(path), "source_frames": len(track), "footage_reference_frame": ref,
               "source_frames_trackable": counts["ok"]}
        if not present(row.get("portrait")):
            rgb = read_frame(row["source_video"], rate, ref)
            rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
            digest = pixel_hash(rgb)
            dst = shared_dir(row, "_portraits") / f"{digest}.png"
            if not dst.exists():
                write_png(dst, rgb)
            out.update(portrait_image=str(dst), portrait_hash=digest, portrait_width=int(rgb.shape[1]),
                       portrait_height=int(rgb.shape[0]), portrait_from="source_video")
        return out

    def _portrait_crop(self, row: dict[str, Any]) -> dict[str, Any]:
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
            meta = self._crop(rgb, crop_path, _scale_note(row, rgb))
            atomic_write_text(meta_path, json.dumps(meta, indent=1))
        if "error" in meta:
            field = "source_video" if row.get("portrait_from") == "source_video" else "portrait"
            raise ClipError(meta["error"], field=field, error_type=meta["error_type"])
        return {"face_crop": str(crop_path), "face_transform": str(meta_path),
                "crop_size": self.size, "face_score": meta["score"], "face_angle": meta["angle"],
                "face_roll": meta["roll"], "face_px": meta["face_px"],
                "faces_ignored": meta["ignored"], "face_backend": meta["backend"],
                "face_cached": bool(cached)}

    def _read(self, row: dict[str, Any], path: str | None = None) -> np.ndarray:
        try:
            return read_rgb(path or row["portrait"], max_side=None if path else self.max_image_side,
                            even=True)
        except (ImageError, TypeError) as exc:
            raise ClipError(str(exc), field="portrait", error_type="UnreadableImage") from exc

    def _crop(self, rgb: np.ndarray, crop_path: Path, scale_note: str = "") -> dict[str, Any]:
        base = {"backend": self.cfg.backend, "size": self.size,
                "image_width": int(rgb.shape[1]), "image_height": int(rgb.shape[0])}
        try:
            det = locate_face(self.finder, rgb, self.cfg, scale_note)
        except PortraitFaceError as exc:
            return {**base, "error": str(exc), "error_type": exc.kind, "faces": exc.count}
        matrix = similarity_transform(det.face.landmarks, self.size, self.cfg.crop_scale,
                                      self.cfg.center_shift)
        write_png(crop_path, warp_to_crop(rgb, matrix, self.size))
        return {**base, "matrix": matrix.tolist(), "box": list(det.face.box),
                "score": round(det.face.score, 4), "angle": det.angle,
                "roll": round(face_roll(det.face.landmarks), 2),
                "face_px": round(face_width(det.face.landmarks), 1), "ignored": len(det.ignored),
                "landmarks": np.round(det.face.landmarks, 2).tolist(),
                "crop_landmarks": np.round(transform_points(matrix, det.face.landmarks), 2).tolist()}


def _scale_note(row: dict[str, Any], rgb: np.ndarray) -> str:
    """' (scaled down from WxH)' when ingest reduced the picture, else ''."""
    w, h = row.get("portrait_src_width"), row.get("portrait_src_height")
    if present(w) and present(h) and int(w) > rgb.shape[1] + 1:
        return f" (scaled down from {int(w)}x{int(h)}, ingest.max_image_side)"
    return ""


def load_transform(path: str | Path) -> tuple[np.ndarray, int, tuple[int, int]]:
    """(2x3 portrait->crop matrix, crop size, (image width, image height)) from a face JSON."""
    meta = _read_json(Path(path))
    return (np.asarray(meta["matrix"], dtype=np.float64), int(meta["size"]),
            (int(meta["image_width"]), int(meta["image_height"])))


def load_landmarks(path: str | Path) -> np.ndarray:
    """The portrait's 68 landmarks (portrait pixels) from a face JSON."""
    return np.asarray(_read_json(Path(path))["landmarks"], dtype=np.float64)


def load_crop_landmarks(path: str | Path) -> np.ndarray:
    """The portrait's 68 landmarks in its face crop's pixels, from a face JSON."""
    meta = _read_json(Path(path))
    return transform_points(np.asarray(meta["matrix"], np.float64), np.asarray(meta["landmarks"], np.float64))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
