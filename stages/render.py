"""Render: source encoded once, frames generated in batches, optionally pasted back into the full
portrait, streamed straight into an ffmpeg pipe -> ``OUT/work/<id>/video.mp4`` (video only, 25 fps,
encoded with the delivery settings ``mux.crf`` / ``mux.preset`` so mux can stream-copy it).

A grayscale portrait (all three channels equal in its face crop) gives a grayscale video: the
generated frames are reduced to their luma (BT.601) before paste-back, so a black-and-white photo
does not get a tinted face. The video is always 3-channel H.264 yuv420p with even sides (ingest
trims odd portraits by one pixel).

Frames never enter a row: only the path, the frame count and the device go back.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image

from pipeline.config import PipelineConfig
from stages.alignment import transform_points
from stages.base import ClipError, Stage
from stages.face_crop import load_transform
from stages.images import read_rgb
from stages.ingest import present, work_dir_of
from stages.media import FfmpegWriter, MediaError
from stages.model_runtime import load_runtime


def feather_mask(size: int, feather: float) -> np.ndarray:
    """(size, size) weights: 1 inside, a smooth ramp over ``feather * size`` pixels to 0 at the
    crop's border (smoothstep), so the pasted crop has no visible seam."""
    width = max(1.0, float(feather) * size)
    pos = np.arange(size, dtype=np.float32) + 0.5
    ramp = np.clip(np.minimum(pos, size - pos) / width, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


def is_grayscale(image: np.ndarray, tolerance: int = 2) -> bool:
    """True when every pixel's channels differ by at most ``tolerance`` (a black-and-white photo
    stored as RGB, or a grayscale file read as RGB)."""
    rgb = np.asarray(image, dtype=np.int16)
    return bool((rgb.max(-1) - rgb.min(-1)).max() <= tolerance)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 frames -> their BT.601 luma repeated in three channels."""
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(luma + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


class PasteBack:
    """Put generated crops back into the portrait with the inverse of the crop transform.

    Only the portrait's region under the crop is warped and blended per frame; the rest of the
    picture is copied.
    """

    def __init__(self, portrait: np.ndarray, matrix: np.ndarray, size: int, feather: float):
        self.portrait = np.ascontiguousarray(portrait)
        h, w = portrait.shape[:2]
        inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
        corners = transform_points(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
        if x1 <= x0 or y1 <= y0:
            raise ValueError("the face crop lies outside the portrait")
        self.roi = (int(x0), int(y0), int(x1), int(y1))
        roi_matrix = np.asarray(matrix, np.float64).copy()  # ROI pixel -> crop pixel
        roi_matrix[:, 2] += roi_matrix[:, :2] @ np.array([x0, y0], np.float64)
        self.matrix = roi_matrix
        self.dsize = (int(x1 - x0), int(y1 - y0))
        mask = cv2.warpAffine(feather_mask(size, feather), roi_matrix, self.dsize,
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self.mask = mask[:, :, None]
        self.base = portrait[y0:y1, x0:x1].astype(np.float32) * (1.0 - self.mask)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.roi
        out = np.repeat(self.portrait[None], len(crops), axis=0)
        for i, crop in enumerate(crops):
            face = cv2.warpAffine(crop, self.matrix, self.dsize,
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
            blend = self.base + face.astype(np.float32) * self.mask
            out[i, y0:y1, x0:x1] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
        return out


class RenderStage(Stage):
    """motion.npz + face crop -> ``video.mp4`` (see the module docstring)."""

    name = "render"

    def __init__(self, config: PipelineConfig):
        self.cfg = config.render
        if self.cfg.output not in ("crop", "full"):
            raise ValueError(f"render.output={self.cfg.output!r}: expected crop or full")
        self.mux = config.mux
        self.fps = int(config.ingest.fps)
        self.max_image_side = int(config.ingest.max_image_side)
        self.runtime = load_runtime(config, batch_size=self.cfg.batch_size)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        import torch

        work = work_dir_of(row)
        size = self.runtime.size
        crop = np.asarray(Image.open(row["face_crop"]).convert("RGB"))
        if crop.shape[:2] != (size, size):
            raise ClipError(f"the face crop is {crop.shape[1]}x{crop.shape[0]} but the model renders "
                            f"{size}x{size}; rerun face_crop with this checkpoint", field="portrait")
        motion = np.load(row["motion_path"])
        device = self.runtime.device
        alphas = [torch.from_numpy(motion[k]).to(device) if k in motion else None
                  for k in ("alpha_lip", "alpha_pose", "alpha_exp")]
        renderer = self.runtime.renderer
        state = renderer.source(crop)
        paste = self._paste(row, size) if self.cfg.output == "full" else None
        gray = is_grayscale(crop)
        height, width = (paste.portrait.shape[:2] if paste is not None else (size, size))
        path = work / "video.mp4"
        try:
            with FfmpegWriter(path, width, height, fps=self.fps, crf=int(self.mux.crf),
                              preset=str(self.mux.preset)) as writer:
                with torch.inference_mode():
                    for batch in renderer.render(state, *alphas):
                        batch = to_gray(batch) if gray else batch
                        writer.write(paste(batch) if paste is not None else batch)
        except MediaError as exc:
            raise ClipError(str(exc), error_type="EncodeFailed") from exc
        return {"video_path": str(path), "frames": writer.frames, "render_device": device,
                "render_output": self.cfg.output, "render_grayscale": gray,
                "checkpoint_id": self.runtime.checkpoint_id}

    def _paste(self, row: dict[str, Any], size: int) -> PasteBack:
        matrix, crop_size, (w, h) = load_transform(row["face_transform"])
        if crop_size != size:
            raise ClipError(f"the crop transform is for {crop_size} px, the model renders {size}",
                            field="portrait")
        source = row["portrait_image"] if present(row.get("portrait_image")) else row["portrait"]
        portrait = read_rgb(source, max_side=self.max_image_side, even=True)
        if portrait.shape[:2] != (h, w):
            raise ClipError(f"the portrait is {portrait.shape[1]}x{portrait.shape[0]} but was "
                            f"cropped at {w}x{h}; rerun face_crop", field="portrait")
        return PasteBack(portrait, matrix, size, self.cfg.feather)
