"""One video -> training clips (data_format): the per-video worker of ``fixtalk data prepare``.

For a talking-face video (HDTF / MEAD / VFHQ style), :func:`prepare_video`:

1. probes it and decodes its audio to 16 kHz mono (:mod:`fixtalk.train.video_io`);
2. scans its 25 fps frames for shots, face counts and 68 landmarks (:mod:`fixtalk.train.face_scan`);
3. cuts the frames into clips per shot, or drops them with a reason (:mod:`fixtalk.train.clip_plan`);
4. decodes the frames again and writes each clip as its last frame arrives, with ONE fixed crop
   per clip as EDTalk/FOMM do: the similarity transform of the clip's median eye/mouth centres
   onto the canonical template (:mod:`fixtalk.train.crop`); landmarks are stored in crop pixels.
   A clip is written under ``OUT/.partial`` and renamed into place when complete;
5. writes the video's done-record ``OUT/_videos/<video_id>.json`` (clips made, footage dropped
   and why) last, so a rerun skips the video (:mod:`fixtalk.train.prepare_records`).

It is a plain function (no Ray): the Ray job (``pipeline.data_prepare``) maps it over videos.
Problems of the video itself never raise; a missing ffmpeg binary does (systemic).
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fixtalk.config import PrepareConfig
from fixtalk.train import crop as cropping
from fixtalk.train.clip_plan import Piece, fill_missing, plan_pieces
from fixtalk.train.data_format import FPS, SAMPLES_PER_FRAME, write_clip
from fixtalk.train.face_scan import FaceScan, scan_frames
from fixtalk.train.prepare_records import (
    PARTIAL,
    VideoTask,
    move_into_place,
    record_path,
    write_json_atomic,
)
from fixtalk.train.video_io import VideoProblem, iter_frames, probe, read_audio

RECORD_FORMAT = 1


def _task(video: VideoTask | str | Path) -> VideoTask:
    if isinstance(video, VideoTask):
        return video
    path = Path(video)
    return VideoTask(str(path), path.name, path.stem, path.stem)


def _drop_row(piece: Piece) -> dict:
    return {"reason": piece.reason, "start": piece.start, "stop": piece.stop,
            "seconds": round(piece.seconds, 3), "message": piece.message}


def prepare_video(video: VideoTask | str | Path, out: str | Path, cfg: PrepareConfig | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """Prepare one video into clip folders ``OUT/<video_id>_<k>``; returns its done-record:
    ``clips`` (name, frames, seconds, shot, missing), ``drops`` (reason, seconds, message),
    ``seconds`` of footage, ``kept_seconds``, the ``settings`` used and ``took_s``."""
    task, out, cfg = _task(video), Path(out), cfg or PrepareConfig()
    path = Path(task.path)
    started = time.time()
    record = {"format": RECORD_FORMAT, "source": task.source, "video_id": task.video_id,
              "identity": task.identity, "seconds": 0.0, "kept_seconds": 0.0, "clips": [],
              "drops": [], "settings": cfg.clip_settings()}
    try:
        info = probe(path)
        audio = read_audio(path)
        scan = scan_frames(iter_frames(path, info["width"], info["height"]), cfg)
        if len(scan) == 0:
            raise VideoProblem("unreadable", f"{path}: ffmpeg decoded no frames; re-encode it",
                               info["duration"])
        record["seconds"] = round(len(scan) / FPS, 3)
        pieces = plan_pieces(scan, len(audio) // SAMPLES_PER_FRAME, cfg)
        record["drops"] = [_drop_row(p) for p in pieces if p.reason]
        kept = [p for p in pieces if p.reason is None]
        if kept:
            record["clips"] = write_clips(path, out, task, kept, scan, audio, cfg, info)
    except VideoProblem as exc:
        record["seconds"] = round(exc.seconds, 3)
        record["drops"] = [{"reason": exc.reason, "start": 0, "stop": 0,
                            "seconds": round(exc.seconds, 3), "message": str(exc)}]
    record["kept_seconds"] = round(sum(c["seconds"] for c in record["clips"]), 3)
    record["took_s"] = round(time.time() - started, 2)
    write_json_atomic(record_path(out, task.video_id), record)
    if log is not None:
        log(describe(record))
    return record


def write_clips(path: Path, out: Path, task: VideoTask, kept: list[Piece], scan: FaceScan,
                audio: np.ndarray, cfg: PrepareConfig, info: dict) -> list[dict]:
    """Decode the frames again and write each kept piece as a clip when its last frame arrives."""
    size = int(cfg.size)
    plans = []
    for k, piece in enumerate(kept):
        filled = fill_missing(scan.landmarks[piece.start:piece.stop])
        plans.append((k, piece, cropping.crop_matrix(np.median(filled, axis=0), size), filled))
    made, current, frames = [], 0, None
    for t, frame in enumerate(iter_frames(path, info["width"], info["height"])):
        if current >= len(plans):
            continue  # read to the end: ffmpeg's exit status tells a decoding failure
        k, piece, mat, filled = plans[current]
        if t < piece.start:
            continue
        if frames is None:
            frames = np.empty((piece.stop - piece.start, size, size, 3), np.uint8)
        frames[t - piece.start] = cropping.warp_crop(np.ascontiguousarray(frame), mat, size)
        if t == piece.stop - 1:
            made.append(_write_one(out, task, k, piece, mat, filled, frames, audio, cfg))
            current, frames = current + 1, None
    return made


def _write_one(out: Path, task: VideoTask, k: int, piece: Piece, mat: np.ndarray, filled: np.ndarray,
               frames: np.ndarray, audio: np.ndarray, cfg: PrepareConfig) -> dict:
    """One clip folder, written under OUT/.partial and renamed into place."""
    name = f"{task.video_id}_{k:03d}"
    meta = {"kind": "video", "identity": task.identity, "split": cfg.split, "source": task.source,
            "licence": cfg.licence, "shot": piece.shot, "segment": [piece.start, piece.stop],
            "crop_matrix": mat.tolist(), "missing_face_fraction": round(piece.missing, 4)}
    clip_audio = audio[piece.start * SAMPLES_PER_FRAME: piece.stop * SAMPLES_PER_FRAME]
    tmp = out / PARTIAL / name
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a killed run
    write_clip(tmp, frames, clip_audio, cropping.apply_matrix(mat, filled), meta)
    move_into_place(tmp, out / name)
    return {"name": name, "start": piece.start, "stop": piece.stop, "seconds": round(piece.seconds, 3),
            "shot": piece.shot, "missing": round(piece.missing, 4)}


def describe(record: dict) -> str:
    """One line about a finished video: clips made and footage dropped by reason."""
    drops: dict[str, float] = {}
    for d in record["drops"]:
        drops[d["reason"]] = drops.get(d["reason"], 0.0) + d["seconds"]
    dropped = ", ".join(f"{r} {s:.1f} s" for r, s in drops.items())
    return (f"[prepare] {record['source']}: {len(record['clips'])} clip(s), "
            f"{record['kept_seconds']:.1f} of {record['seconds']:.1f} s kept"
            + (f"; dropped: {dropped}" if dropped else ""))
