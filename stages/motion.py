"""Motion: the per-frame bank weights that drive the render, saved as ``OUT/work/<id>/motion.npz``.

EDTalk / FixTalk render frame t from the source code plus ``Q [alpha_lip_t; alpha_pose_t;
alpha_exp_t]`` (lip 20, pose 6, expression 10 weights over the orthonormal motion bases):

* ``alpha_lip`` (T, lip_dim): Audio2Lip on the 16 kHz speech, held at rest where the audio is
  silent (``motion.silence_gate``, :class:`fixtalk.config.SilenceGate`), smoothed over
  ``motion.lip_smoothing_sigma`` frames; T = floor(samples / 640) frames at 25 fps;
* ``alpha_pose`` (T, pose_dim): per ``pose_video`` frame (one fixed crop for the whole video, so
  the head's motion stays in the frame; landmarks detected on every frame), played back and forth
  when the video is shorter than the speech; without a pose video, the portrait's own pose, held.
  With ``motion.pose_track.mode=rigid`` (default) the pose bank weights of the *portrait* turned,
  tilted and scaled by the video's fitted rigid head motion (smoothed and bounded,
  :mod:`fixtalk.pose_track`), so the video's face never reaches the encoder; ``relative`` /
  ``frames`` read the video's own frames. With ``motion.shift_stitching`` (default)
  ``head_motion`` (T, 6) keeps the head motion, whose shift the render puts back rigidly
  (:mod:`fixtalk.shift_stitching`; in the frame modes each frame's head is moved back by its
  shift before the encoder reads it);
* ``alpha_exp`` (T, exp_dim), optional: the ``emotion`` label's weights times its intensity, held,
  or the expression weights of each ``expression_video`` frame (back and forth as above).

Emotion policy. A row's ``emotion`` is a wish, not a requirement of the clip: the shipped default
model (trained on synthetic data) has no emotion weights, and the demo must still render. So:

* an unknown label (not one of :data:`manifests.schema.EMOTIONS`) or an intensity that is not a
  number in :data:`manifests.schema.INTENSITY_RANGE` is an input error: the row fails, naming
  ``emotion`` / ``emotion_intensity`` and the allowed values;
* a valid label the model cannot render (no emotion weights, or none for that label) is rendered
  with the portrait's own (neutral) expression; the row gets ``emotion_applied=False`` and a
  ``warnings`` text naming the field and the fix (``--checkpoint EDTalk.pt`` with
  ``model.emotions_dir``). ``neutral`` without emotion weights is the portrait's own expression
  (applied). The same holds for an ``expression_video`` with a model that has no expression bank.
* ``emotion_applied`` is None when the row asks for no emotion.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from fixtalk import pose_track
from fixtalk.shift_stitching import stabilise
from manifests.schema import EMOTIONS, INTENSITY_RANGE
from stages.base import ClipError, Stage
from stages.config import PipelineConfig
from stages.face.alignment import warp_to_crop
from stages.face_crop import fixed_video_transform, load_crop_landmarks, make_finder
from stages.ingest import present, work_dir_of
from stages.media.av import MediaError, iter_video_frames
from stages.rendering.runtime import load_runtime

#: Side (px) of the pose video's crops that dlib measures landmarks on for shift stitching: the
#: model's own crop (128 or 64 px) is too small for dlib's detector.
LANDMARK_CROP = 256


def pingpong_index(n: int, length: int) -> np.ndarray:
    """Indices 0, 1, ..., n-1, n-2, ..., 1, 0, 1, ... of length ``length`` (forward only while
    ``length <= n``)."""
    if n <= 1:
        return np.zeros(length, dtype=np.int64)
    t = np.arange(length) % (2 * n - 2)
    return np.where(t < n, t, 2 * n - 2 - t)


def join_warnings(previous: Any, notes: list[str]) -> str | None:
    """The row's ``warnings`` text with ``notes`` appended (`` | `` between entries)."""
    parts = [str(previous)] if present(previous) else []
    parts += [n for n in notes if n not in parts]
    return " | ".join(parts) or None


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


class MotionStage(Stage):
    """Audio, pose and expression -> ``motion.npz`` (see the module docstring)."""

    name = "motion"

    def __init__(self, config: PipelineConfig):
        self.cfg = config.motion
        self.crop_cfg = config.face_crop
        self.sample_rate = int(config.ingest.sample_rate)
        if self.cfg.shift_stitching.reference not in ("median", "first"):
            raise ValueError(f"motion.shift_stitching.reference={self.cfg.shift_stitching.reference!r}: "
                             "expected 'median' or 'first'")
        if self.cfg.pose_track.mode not in pose_track.MODES:
            raise ValueError(f"motion.pose_track.mode={self.cfg.pose_track.mode!r}: expected one of "
                             f"{', '.join(pose_track.MODES)}")
        self.runtime = load_runtime(config)
        self._finder = None

    @property
    def finder(self):
        if self._finder is None:
            self._finder = make_finder(self.crop_cfg)
        return self._finder

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        self.runtime.use_row_weights(row)
        work = work_dir_of(row)
        wave, sr = sf.read(row["audio_16k"], dtype="float32", always_2d=False)
        if sr != self.sample_rate:
            raise ClipError(f"{row['audio_16k']} is {sr} Hz, expected {self.sample_rate}; rerun ingest",
                            field="audio")
        renderer = self.runtime.renderer
        lip = _to_numpy(renderer.lip_weights(np.asarray(wave, np.float32),
                                             smoothing_sigma=self.cfg.lip_smoothing_sigma,
                                             silence=self.cfg.silence_gate))
        frames = len(lip)
        if frames == 0:
            raise ClipError("the audio is shorter than one video frame (40 ms)", field="audio")
        if present(row.get("footage_track")):
            return self._dub(row, work, lip)
        crop = np.asarray(Image.open(row["face_crop"]).convert("RGB"))
        arrays = {"alpha_lip": lip}
        if present(row.get("pose_video_25")):
            pose, head = self._video_pose(row, crop)
            if head is not None:
                arrays["head_motion"] = head[pingpong_index(len(head), frames)]
            arrays["alpha_pose"] = pose[pingpong_index(len(pose), frames)]
            pose_source = "pose_video"
        else:
            own = _to_numpy(renderer.motion_weights(crop[None])["pose"])
            arrays["alpha_pose"] = np.repeat(own.reshape(1, -1), frames, axis=0)
            pose_source = "portrait"
        notes: list[str] = []
        exp, exp_source, applied = self._expression(row, frames, notes)
        if exp is not None:
            arrays["alpha_exp"] = exp
        path = work / "motion.npz"
        np.savez(path, **{k: v.astype(np.float32) for k, v in arrays.items()})
        return {"motion_path": str(path), "frames": int(frames), "pose_source": pose_source,
                "expression_source": exp_source, "emotion_applied": applied,
                "warnings": join_warnings(row.get("warnings"), notes),
                "checkpoint_id": self.runtime.checkpoint_id}

    def _dub(self, row: dict[str, Any], work: Path, lip: np.ndarray) -> dict[str, Any]:
        """A dub's motion: the lips from the speech; pose and expression are each footage
        frame's own (read by the render stage from the frame it renders)."""
        ignored = [f for f in ("pose_video", "expression_video", "emotion") if present(row.get(f))]
        notes = [f"{f}: ignored for a dub (the footage's own head and expression are kept); "
                 "leave it empty" for f in ignored]
        path = work / "motion.npz"
        rest = _to_numpy(self.runtime.renderer.rest_lip())
        np.savez(path, alpha_lip=lip.astype(np.float32), alpha_lip_rest=rest)
        return {"motion_path": str(path), "frames": int(len(lip)), "pose_source": "source_video",
                "expression_source": "source_video", "emotion_applied": False if "emotion" in ignored else None,
                "warnings": join_warnings(row.get("warnings"), notes),
                "checkpoint_id": self.runtime.checkpoint_id}

    # -- expression ---------------------------------------------------------------------------
    def _expression(self, row: dict[str, Any], frames: int,
                    notes: list[str]) -> tuple[np.ndarray | None, str, bool | None]:
        """(alpha_exp or None, expression source, emotion_applied); see the module docstring."""
        model = self.runtime.model
        video = present(row.get("expression_video_25"))
        label = row.get("emotion")
        if present(label):
            label, intensity = self._emotion_request(row)
            if video:
                notes.append("expression_video: ignored because emotion is set; leave one of the two "
                             "empty")
            bank = (getattr(model, "emotion_weights", {}) or {}) if model.has_exp else {}
            if label in bank:
                vec = _to_numpy(bank[label]).reshape(1, -1) * intensity
                return np.repeat(vec, frames, axis=0), f"emotion:{label}", True
            if label == "neutral":
                return None, "portrait", True
            why = ("has no emotion weights" if not bank else
                   f"has no weights for {label!r} (it has {', '.join(sorted(bank))})")
            notes.append(f"emotion: {label!r} not applied, the clip keeps the portrait's neutral "
                         f"expression: the model ({self.runtime.checkpoint_id}) {why}; to render "
                         "emotions use --checkpoint EDTalk.pt with model.emotions_dir (EDTalk's "
                         "predefined_exp_weights folder)")
            return None, "portrait", False
        if video:
            if not model.has_exp:
                notes.append("expression_video: not applied, the model has no expression bank; the "
                             "clip keeps the portrait's expression; use a checkpoint with one "
                             "(--checkpoint EDTalk.pt)")
                return None, "portrait", None
            exp = self._video_weights(row, "expression_video")["exp"]
            return exp[pingpong_index(len(exp), frames)], "expression_video", None
        return None, "none", None

    def _emotion_request(self, row: dict[str, Any]) -> tuple[str, float]:
        """The row's (label, intensity), checked; :class:`ClipError` for input errors."""
        label = str(row["emotion"]).strip().lower()
        if label not in EMOTIONS:
            raise ClipError(f"unknown emotion {row['emotion']!r}; expected one of "
                            f"{', '.join(EMOTIONS)} (or leave it empty)", field="emotion",
                            error_type="UnknownEmotion")
        raw = row.get("emotion_intensity")
        lo, hi = INTENSITY_RANGE
        try:
            intensity = float(raw) if present(raw) else float(self.cfg.emotion_intensity)
        except (TypeError, ValueError):
            intensity = float("nan")
        if not (lo <= intensity <= hi):  # NaN fails too
            raise ClipError(f"{raw!r} is not a number from {lo:g} to {hi:g}; give the emotion's "
                            f"strength (1 = the label's own, 0 = none) or leave it empty",
                            field="emotion_intensity", error_type="BadIntensity")
        return label, intensity

    # -- driving videos -----------------------------------------------------------------------
    def _video_weights(self, row: dict[str, Any], field: str, head: np.ndarray | None = None,
                       landmarks: np.ndarray | None = None,
                       matrix: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Bank weights of every frame of a 25 fps driving video, cropped with one fixed
        similarity transform (``matrix``, see :meth:`_video_matrix`); with ``head`` (and the
        crops' ``landmarks``), each head moved back by its shift first (shift stitching)."""
        matrix = self._video_matrix(row, field) if matrix is None else matrix
        parts: dict[str, list[np.ndarray]] = {}
        done = 0
        for crops in self._video_crops(row, field, matrix, self.runtime.size):
            if head is not None:
                span = slice(done, done + len(crops))
                crops = stabilise(crops, landmarks[span], head[span])
            done += len(crops)
            for key, value in self.runtime.renderer.motion_weights(crops).items():
                if value is not None:
                    parts.setdefault(key, []).append(_to_numpy(value))
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    def _video_pose(self, row: dict[str, Any], crop: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(alpha_pose (T, pose_dim), head motion (T, 6) whose shift the render puts back, or
        None) of the pose video, as ``motion.pose_track.mode`` says (:mod:`fixtalk.pose_track`):
        ``rigid`` reads the pose off the portrait moved by the video's conditioned rigid head
        motion; ``relative`` / ``frames`` off the video's own crops (relative to their median /
        as they are), each head moved back by its shift first with ``motion.shift_stitching``."""
        track, stitching = self.cfg.pose_track, self.cfg.shift_stitching
        if track.mode == "frames" and not stitching.enabled:
            return self._video_weights(row, "pose_video")["pose"], None
        matrix = self._video_matrix(row, "pose_video")
        lms = self._video_landmarks(row, matrix)
        try:
            head = pose_track.video_head(lms, track, stitching)
        except ValueError as exc:
            raise ClipError(f"{exc} of the video; give a video of one face seen from the front",
                            field="pose_video", error_type="NoFace") from exc
        if track.mode == "rigid":
            portrait_lm = load_crop_landmarks(row["face_transform"])
            pose = pose_track.rigid_pose_weights(self.runtime.renderer, crop, portrait_lm, head)
        else:
            pose = self._video_weights(row, "pose_video", head if stitching.enabled else None, lms, matrix)["pose"]
            if track.mode == "relative":
                own = _to_numpy(self.runtime.renderer.motion_weights(crop[None])["pose"])
                pose = pose_track.relative_pose_weights(pose, own, track)
        return pose, (head.astype(np.float32) if stitching.enabled else None)

    def _video_landmarks(self, row: dict[str, Any], matrix: np.ndarray) -> np.ndarray:
        """dlib-68 landmarks (T, 68, 2) of the pose video's fixed crops, measured at
        ``LANDMARK_CROP`` px and scaled to the model's crop."""
        from fixtalk.train.face_meter import FaceMeter

        meter, k = FaceMeter(), self.runtime.size / LANDMARK_CROP
        return np.concatenate([meter.landmarks(chunk, detect=True) * k
                               for chunk in self._video_crops(row, "pose_video", matrix, LANDMARK_CROP)])

    def _video_matrix(self, row: dict[str, Any], field: str) -> np.ndarray:
        """The one crop transform (model-crop pixels) of the driving video ``field``
        (:func:`stages.face_crop.fixed_video_transform` on sampled frames)."""
        path = Path(row[f"{field}_25"])
        try:
            sample = self._sample_frames(path, int(row.get(f"{field}_frames") or 0))
        except MediaError as exc:
            raise ClipError(str(exc), field=field, error_type="UnreadableVideo") from exc
        matrix = fixed_video_transform(self.finder, sample, self.runtime.size, self.crop_cfg)
        if matrix is None:
            raise ClipError(f"no face found in {len(sample)} sampled frames of the video; "
                            "give a video of one face seen from the front", field=field,
                            error_type="NoFace")
        return matrix

    def _video_crops(self, row: dict[str, Any], field: str, matrix: np.ndarray, size: int):
        """Chunks (n, size, size, 3) of every frame of the 25 fps driving video ``field``, cut with
        the fixed transform ``matrix`` (for the model's crop size) scaled to ``size``."""
        scaled = np.asarray(matrix, np.float64) * (size / self.runtime.size)
        try:
            for chunk in iter_video_frames(Path(row[f"{field}_25"]), chunk=int(self.cfg.chunk_frames)):
                yield np.stack([warp_to_crop(f, scaled, size) for f in chunk])
        except MediaError as exc:
            raise ClipError(str(exc), field=field, error_type="UnreadableVideo") from exc

    def _sample_frames(self, path: Path, count: int) -> list[np.ndarray]:
        k = max(1, int(self.cfg.driving_landmark_frames))
        if count <= 0:
            count = sum(len(c) for c in iter_video_frames(path))
        wanted = set(np.linspace(0, max(count - 1, 0), num=min(k, max(count, 1))).round().astype(int))
        picked, index = [], 0
        for chunk in iter_video_frames(path):
            for frame in chunk:
                if index in wanted:
                    picked.append(frame.copy())
                index += 1
        return picked
