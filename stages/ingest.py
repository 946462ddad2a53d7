"""Ingest: probe and normalise a clip's inputs into ``OUT/work/<clip_id>/``.

* audio -> ``audio16k.wav`` (16 kHz mono PCM, the rate of EDTalk's mel front-end) from any file
  ffmpeg reads: WAV at any rate / channel count, MP3, M4A/AAC, OGG, FLAC, or a video's sound track;
  a missing, zero-byte, undecodable, silent, too short or too long file fails the row naming
  ``audio`` (the length is checked from the container before decoding, and decoding stops at the
  limit, so a multi-hour file costs no memory);
* portrait -> RGB (EXIF orientation applied, alpha on white, at most ``max_image_side``, even sides),
  stored once per picture content under ``OUT/work/_portraits/<hash>.png``;
* ``pose_video`` / ``expression_video`` -> 25 fps H.264 copies (``pose25.mp4``, ``expression25.mp4``),
  since the lip frames are tied to 25 fps (640 audio samples per frame).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from stages.base import ClipError, Stage
from stages.config import PipelineConfig
from stages.media.av import (
    MediaError,
    decode_audio,
    first_stream,
    media_duration,
    normalise_video,
    probe,
    require_ffmpeg,
    stream_fps,
)
from stages.media.footage import probe_footage
from stages.media.images import ImageError, pixel_hash, read_rgb_sized, write_png

DRIVING_VIDEOS = {"pose_video": "pose25.mp4", "expression_video": "expression25.mp4"}
#: Footage columns and the prefix of what ingest records about them (stages/media/footage.py).
FOOTAGE_VIDEOS = {"source_video": "source", "presenter_video": "presenter"}


def present(value: Any) -> bool:
    """A real cell value: not None, NaN or the empty string."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value) != ""


def portrait_source(row: dict[str, Any]) -> str:
    """The portrait file the face crop's transform was made on: ingest's normalised copy
    (``portrait_image``), else the row's ``portrait``; read it with ``ingest.max_image_side``."""
    return str(row["portrait_image"] if present(row.get("portrait_image")) else row["portrait"])


def work_dir_of(row: dict[str, Any]) -> Path:
    """``OUT/work/<clip_id>`` (from the row's ``work_dir``, else from ``out_dir``), created."""
    if present(row.get("work_dir")):
        path = Path(row["work_dir"])
    elif present(row.get("out_dir")):
        path = Path(row["out_dir"]) / "work" / str(row["clip_id"])
    else:
        raise ClipError("the row has neither work_dir nor out_dir; the pipeline sets them",
                        field="work_dir")
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_dir(row: dict[str, Any], name: str) -> Path:
    """``OUT/work/<name>``: caches shared by the clips of one output folder."""
    base = Path(row["out_dir"]) / "work" if present(row.get("out_dir")) else work_dir_of(row).parent
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


class IngestStage(Stage):
    """Probe and normalise audio, portrait and driving videos (see the module docstring)."""

    name = "ingest"

    def __init__(self, config: PipelineConfig):
        self.cfg = config.ingest
        require_ffmpeg()

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        work = work_dir_of(row)
        out: dict[str, Any] = {"work_dir": str(work)}
        out.update(self._audio(row, work))
        if present(row.get("portrait")) or not present(row.get("source_video")):
            out.update(self._portrait(row))
        for field, prefix in FOOTAGE_VIDEOS.items():
            if present(row.get(field)):
                info = probe_footage(row[field], field)
                out.update({f"{prefix}_{k}": v for k, v in info.items()})
        for field, name in DRIVING_VIDEOS.items():
            out.update(self._driving(row, field, work / name))
        return out

    # -- audio -----------------------------------------------------------------------------
    def _audio(self, row: dict[str, Any], work: Path) -> dict[str, Any]:
        src = row.get("audio")
        if not present(src):
            raise ClipError("no audio file; give an audio path, or a script so that speech is "
                            "synthesised for the row", field="audio")
        name = Path(src).name
        if Path(src).is_file() and Path(src).stat().st_size == 0:
            raise ClipError(f"{name} is an empty file (0 bytes); replace it with the clip's speech",
                            field="audio", error_type="EmptyAudio")
        try:
            info = probe(src)
        except MediaError as exc:
            raise ClipError(f"{exc}; expected a WAV, MP3, M4A/AAC, FLAC or OGG file",
                            field="audio", error_type="UnreadableAudio") from exc
        stream = first_stream(info, "audio")
        if stream is None:
            raise ClipError(f"{Path(src).name} has no audio stream; give an audio file "
                            "(or a video with sound)", field="audio", error_type="UnreadableAudio")
        limit = float(self.cfg.max_audio_seconds)
        if media_duration(info, "audio") > limit + 1.0:
            raise self._too_long(name, media_duration(info, "audio"))
        sr = int(self.cfg.sample_rate)
        try:
            wave = decode_audio(src, sr, max_seconds=limit + 1.0)
        except MediaError as exc:
            raise ClipError(str(exc), field="audio", error_type="UnreadableAudio") from exc
        seconds = len(wave) / sr
        if len(wave) == 0:
            raise ClipError(f"{name} contains no audio samples (empty file); "
                            "replace it with the clip's speech", field="audio", error_type="EmptyAudio")
        if seconds < self.cfg.min_audio_seconds:
            raise ClipError(f"{Path(src).name} lasts {seconds:.3f} s, shorter than "
                            f"{self.cfg.min_audio_seconds} s; give the clip's full speech",
                            field="audio", error_type="EmptyAudio")
        if seconds > limit:  # container duration missing or wrong: decoding stopped at the cap
            raise self._too_long(name, seconds, at_least=len(wave) >= int((limit + 1.0) * sr) - 1)
        peak = float(np.max(np.abs(wave)))
        peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf
        if self.cfg.silence_dbfs is not None and peak_db < self.cfg.silence_dbfs:
            raise ClipError(f"{Path(src).name} is silent (peak {peak_db:.1f} dBFS, below "
                            f"ingest.silence_dbfs={self.cfg.silence_dbfs:g}); check that the right "
                            "file is referenced", field="audio", error_type="SilentAudio")
        dst = work / "audio16k.wav"
        sf.write(dst, np.clip(wave, -1.0, 1.0), sr, subtype="PCM_16")
        frames = len(wave) * int(self.cfg.fps) // sr
        return {
            "audio_16k": str(dst),
            "audio_duration_s": round(seconds, 6),
            "audio_frames": int(frames),
            "audio_src_codec": stream.get("codec_name"),
            "audio_src_rate": int(stream.get("sample_rate") or 0),
            "audio_src_channels": int(stream.get("channels") or 0),
            "audio_peak_dbfs": round(peak_db, 2),
        }

    def _too_long(self, name: str, seconds: float, at_least: bool = False) -> ClipError:
        more = "more than " if at_least else ""
        return ClipError(f"{name} lasts {more}{seconds:.1f} s, longer than the limit "
                         f"ingest.max_audio_seconds={self.cfg.max_audio_seconds:g}; split it into "
                         "several clips or raise the limit (--set ingest.max_audio_seconds=...)",
                         field="audio", error_type="AudioTooLong")

    # -- portrait --------------------------------------------------------------------------
    def _portrait(self, row: dict[str, Any]) -> dict[str, Any]:
        src = row.get("portrait")
        if not present(src):
            raise ClipError("no portrait image; give the presenter's picture", field="portrait")
        try:
            rgb, (src_w, src_h) = read_rgb_sized(src, max_side=int(self.cfg.max_image_side),
                                                 even=True)
        except ImageError as exc:
            raise ClipError(str(exc), field="portrait", error_type="UnreadableImage") from exc
        digest = pixel_hash(rgb)
        dst = shared_dir(row, "_portraits") / f"{digest}.png"
        if not dst.exists():
            write_png(dst, rgb)
        return {"portrait_image": str(dst), "portrait_hash": digest,
                "portrait_width": int(rgb.shape[1]), "portrait_height": int(rgb.shape[0]),
                "portrait_src_width": src_w, "portrait_src_height": src_h}

    # -- driving videos --------------------------------------------------------------------
    def _driving(self, row: dict[str, Any], field: str, dst: Path) -> dict[str, Any]:
        src = row.get(field)
        if not present(src):
            return {f"{field}_25": None}
        try:
            info = probe(src)
        except MediaError as exc:
            raise ClipError(f"{exc}; expected a video file (MP4, MOV, MKV, WebM)", field=field,
                            error_type="UnreadableVideo") from exc
        stream = first_stream(info, "video")
        if stream is None:
            raise ClipError(f"{Path(src).name} has no video stream; give a video of a face",
                            field=field, error_type="UnreadableVideo")
        try:
            normalise_video(src, dst, fps=int(self.cfg.fps), max_side=int(self.cfg.max_video_side))
            frames = int(probe(dst)["streams"][0].get("nb_frames") or 0)
        except (MediaError, IndexError, KeyError) as exc:
            raise ClipError(f"cannot convert {Path(src).name} to {self.cfg.fps} fps: {exc}",
                            field=field, error_type="UnreadableVideo") from exc
        if frames == 0:
            raise ClipError(f"{Path(src).name} has no decodable frames", field=field,
                            error_type="UnreadableVideo")
        return {f"{field}_25": str(dst), f"{field}_frames": frames,
                f"{field}_src_fps": round(stream_fps(stream), 3),
                f"{field}_src_duration_s": round(media_duration(info, "video"), 3)}
