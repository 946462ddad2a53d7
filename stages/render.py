"""Render: source encoded once, frames generated in batches, optionally pasted back into the full
portrait, streamed straight into an ffmpeg pipe -> ``OUT/work/<id>/video.mp4`` (video only, 25 fps,
encoded with the delivery settings ``mux.crf`` / ``mux.preset`` so mux can stream-copy it).

A grayscale portrait (all three channels equal in its face crop) gives a grayscale video: the
generated frames are reduced to their luma (BT.601) before paste-back, so a black-and-white photo
does not get a tinted face. The video is always 3-channel H.264 yuv420p with even sides (ingest
trims odd portraits by one pixel).

With a pose video and ``motion.shift_stitching`` (motion.npz holds ``head_motion``), each
rendered crop's head is moved rigidly by the pose video's head shift before paste-back
(:func:`fixtalk.shift_stitching.shift_heads`).

Frames never enter a row: only the path, the frame count and the device go back.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from fixtalk.shift_stitching import shift_heads
from stages.base import ClipError, Stage
from stages.config import PipelineConfig
from stages.face_crop import load_crop_landmarks, load_transform
from stages.ingest import portrait_source, present, shared_dir, work_dir_of
from stages.media.av import FfmpegWriter, MediaError
from stages.media.images import read_rgb
from stages.media.paste import LowerFaceComposite, PasteBack, lower_face_mask
from stages.rendering.dub import DubRenderer
from stages.rendering.runtime import load_runtime



def is_grayscale(image: np.ndarray, tolerance: int = 2) -> bool:
    """True when every pixel's channels differ by at most ``tolerance`` (a black-and-white photo
    stored as RGB, or a grayscale file read as RGB)."""
    rgb = np.asarray(image, dtype=np.int16)
    return bool((rgb.max(-1) - rgb.min(-1)).max() <= tolerance)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 frames -> their BT.601 luma repeated in three channels."""
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(luma + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


class RenderStage(Stage):
    """motion.npz + face crop -> ``video.mp4`` (see the module docstring)."""

    name = "render"

    def __init__(self, config: PipelineConfig):
        self.cfg = config.render
        problems = self.cfg.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.mux = config.mux
        self.fps = int(config.ingest.fps)
        self.max_image_side = int(config.ingest.max_image_side)
        self.runtime = load_runtime(config)
        self.dubber = DubRenderer(self.runtime, config.dub, crf=int(self.mux.crf), preset=str(self.mux.preset))

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        import torch

        self.runtime.use_row_weights(row)
        work = work_dir_of(row)
        if present(row.get("footage_track")):
            return {**self.dubber.render(row, work, shared_dir(row, "_memory")), "render_device": self.runtime.device,
                    "render_output": "footage", "render_region": "mouth",
                    "checkpoint_id": self.runtime.checkpoint_id}
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
        region = self.region(row)
        gray = is_grayscale(crop)
        mouth = None
        if region == "mouth":
            mask = lower_face_mask(load_crop_landmarks(row["face_transform"]), size)
            with torch.inference_mode():
                rest = next(iter(renderer.render(state, state.alpha_lip, None, None)))
            mouth = LowerFaceComposite(crop, to_gray(rest)[0] if gray else rest[0], mask)
        head = motion["head_motion"] if "head_motion" in motion else None
        # shift stitching (fixtalk.shift_stitching): the pose video's head shift, put back rigidly
        head_lm = load_crop_landmarks(row["face_transform"]) if head is not None else None
        paste = self._paste(row, size) if self.cfg.output == "full" else None
        height, width = (paste.portrait.shape[:2] if paste is not None else (size, size))
        path = work / "video.mp4"
        try:
            with FfmpegWriter(path, width, height, fps=self.fps, crf=int(self.mux.crf),
                              preset=str(self.mux.preset)) as writer:
                with torch.inference_mode():
                    done = 0
                    for batch in renderer.render(state, *alphas):
                        if head is not None:
                            batch = shift_heads(batch, head_lm, head[done:done + len(batch)])
                        done += len(batch)
                        batch = to_gray(batch) if gray else batch
                        if mouth is not None:
                            changes = mouth.changes(batch)
                            batch = paste.add(changes) if paste is not None else mouth.on_crop(batch)
                        elif paste is not None:
                            batch = paste(batch)
                        writer.write(batch)
        except MediaError as exc:
            raise ClipError(str(exc), error_type="EncodeFailed") from exc
        return {"video_path": str(path), "frames": writer.frames, "render_device": device,
                "render_output": self.cfg.output, "render_region": region, "render_grayscale": gray,
                "checkpoint_id": self.runtime.checkpoint_id}

    def region(self, row: dict[str, Any]) -> str:
        """``face`` or ``mouth`` (see :mod:`stages.media.paste`): ``auto`` keeps the portrait's own
        pixels outside the lower face when the clip holds the portrait's pose and expression."""
        if self.cfg.paste_region != "auto":
            return self.cfg.paste_region
        held = (row.get("pose_source") == "portrait"
                and row.get("expression_source") in ("none", "portrait"))
        return "mouth" if held else "face"

    def _paste(self, row: dict[str, Any], size: int) -> PasteBack:
        matrix, crop_size, (w, h) = load_transform(row["face_transform"])
        if crop_size != size:
            raise ClipError(f"the crop transform is for {crop_size} px, the model renders {size}",
                            field="portrait")
        portrait = read_rgb(portrait_source(row), max_side=self.max_image_side, even=True)
        if portrait.shape[:2] != (h, w):
            raise ClipError(f"the portrait is {portrait.shape[1]}x{portrait.shape[0]} but was "
                            f"cropped at {w}x{h}; rerun face_crop", field="portrait")
        return PasteBack(portrait, matrix, size, self.cfg.feather)
