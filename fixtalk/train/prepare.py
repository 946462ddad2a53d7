"""``fixtalk data prepare VIDEO_DIR OUT``: talking-face videos -> training clips (data_format).

For each video (HDTF / MEAD / VFHQ style: one talking face per video) under VIDEO_DIR:
1. ffmpeg decodes it to 25 fps RGB frames and 16 kHz mono audio (argv lists, file/pipe protocols);
2. dlib finds the face and its 68 landmarks on every frame (detection on a downscaled frame, landmarks
   at full resolution); frames without a face take interpolated landmarks;
3. each segment (``--segment`` seconds) gets ONE fixed crop (as EDTalk/FOMM do): the similarity
   transform of the segment's median eye/mouth centres onto the canonical template (crop.py);
4. frames, audio, landmarks (in crop pixels) and meta.json are written as one clip folder.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from fixtalk.train import crop as cropping
from fixtalk.train.data_format import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, write_clip

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
_PROTOCOLS = ["-protocol_whitelist", "file,pipe"]


def probe(path: Path) -> dict:
    """Width, height and whether the file has audio (ffprobe)."""
    cmd = ["ffprobe", "-v", "error", *_PROTOCOLS, "-show_entries", "stream=codec_type,width,height",
           "-of", "json", str(path)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise RuntimeError("ffprobe not found: install ffmpeg (Debian package ffmpeg)") from exc
    if res.returncode != 0:
        raise ValueError(f"{path}: ffprobe cannot read it: {res.stderr.strip()}")
    streams = json.loads(res.stdout).get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"]
    if not video:
        raise ValueError(f"{path}: no video stream")
    return {"width": int(video[0]["width"]), "height": int(video[0]["height"]),
            "has_audio": any(s.get("codec_type") == "audio" for s in streams)}


def read_audio(path: Path) -> np.ndarray:
    """The first audio stream as float32 16 kHz mono."""
    cmd = ["ffmpeg", "-v", "error", *_PROTOCOLS, "-i", str(path), "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
           "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0:
        raise ValueError(f"{path}: cannot decode audio: {res.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(res.stdout, dtype="<i2").astype(np.float32) / 32768.0


def iter_frames(path: Path, width: int, height: int) -> Iterator[np.ndarray]:
    """RGB uint8 frames resampled to 25 fps, streamed from an ffmpeg pipe."""
    cmd = ["ffmpeg", "-v", "error", *_PROTOCOLS, "-i", str(path), "-an", "-vf", f"fps={FPS}",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    nbytes = width * height * 3
    try:
        while True:
            buf = proc.stdout.read(nbytes)
            if len(buf) < nbytes:
                break
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if proc.wait() != 0:
            raise ValueError(f"{path}: ffmpeg failed while decoding frames: {err.strip()}")


def frame_landmarks(frame: np.ndarray, detect_side: int = 480) -> np.ndarray | None:
    """68 landmarks of the largest-scoring face: detection on a downscaled copy, shape at full size."""
    import cv2

    h, w = frame.shape[:2]
    k = min(1.0, detect_side / max(h, w))
    small = cv2.resize(frame, (int(w * k), int(h * k)), interpolation=cv2.INTER_AREA) if k < 1 else frame
    lm = cropping.detect_landmarks(small, upsample=1)
    if lm is None:
        return None
    if k < 1:  # refine at full resolution inside the scaled box
        lo, hi = lm.min(0) / k, lm.max(0) / k
        pad = 0.1 * (hi - lo)
        lm = cropping.landmarks_in_box(frame, (lo[0] - pad[0], lo[1] - pad[1], hi[0] + pad[0], hi[1] + pad[1]))
    return lm


def fill_missing(lms: list[np.ndarray | None]) -> np.ndarray:
    """Linear interpolation of landmarks over frames where no face was found."""
    n = len(lms)
    have = np.array([x is not None for x in lms])
    if not have.any():
        raise ValueError("no face found in any frame")
    out = np.zeros((n, 68, 2))
    idx = np.nonzero(have)[0]
    arr = np.stack([lms[i] for i in idx])
    for j in range(68):
        for d in range(2):
            out[:, j, d] = np.interp(np.arange(n), idx, arr[:, j, d])
    return out


def prepare_video(path: str | Path, out: str | Path, size: int = 128, segment: float = 10.0,
                  min_seconds: float = 1.0, max_missing: float = 0.3, split: str = "train",
                  licence: str = "unknown (set --licence)", log: Callable[[str], None] = print) -> list[Path]:
    """Prepare one video into clip folders ``OUT/<stem>_<k>``; returns the folders written."""
    path, out = Path(path), Path(out)
    info = probe(path)
    if not info["has_audio"]:
        raise ValueError(f"{path}: no audio stream; training clips need the speech")
    audio = read_audio(path)
    lms: list[np.ndarray | None] = []
    for frame in iter_frames(path, info["width"], info["height"]):
        lms.append(frame_landmarks(frame))
    n = min(len(lms), len(audio) // SAMPLES_PER_FRAME)
    if n < 2:
        raise ValueError(f"{path}: fewer than 2 frames with audio")
    lms = lms[:n]
    seg = n if segment <= 0 else max(2, int(round(segment * FPS)))
    bounds = [(s, min(n, s + seg)) for s in range(0, n, seg)]
    plans = []
    for k, (a, b) in enumerate(bounds):
        if (b - a) < min_seconds * FPS:
            continue
        part = lms[a:b]
        missing = sum(x is None for x in part) / len(part)
        if missing > max_missing:
            log(f"[prepare] {path.name} segment {k}: face missing in {missing:.0%} of frames, skipped")
            continue
        filled = fill_missing(part)
        mat = cropping.crop_matrix(np.median(filled, axis=0), size)
        plans.append((k, a, b, mat, filled, missing))
    written = []
    if not plans:
        return written
    buffers = {k: np.empty((b - a, size, size, 3), np.uint8) for k, a, b, *_ in plans}
    for t, frame in enumerate(iter_frames(path, info["width"], info["height"])):
        for k, a, b, mat, *_ in plans:
            if a <= t < b:
                buffers[k][t - a] = cropping.warp_crop(np.ascontiguousarray(frame), mat, size)
    for k, a, b, mat, filled, missing in plans:
        meta = {"kind": "video", "identity": path.stem, "split": split, "source": str(path.name),
                "licence": licence, "segment": [a, b], "crop_matrix": mat.tolist(),
                "missing_face_fraction": round(missing, 4)}
        clip_audio = audio[a * SAMPLES_PER_FRAME: b * SAMPLES_PER_FRAME]
        folder = write_clip(out / f"{path.stem}_{k:03d}", buffers[k], clip_audio,
                            cropping.apply_matrix(mat, filled), meta)
        written.append(folder)
        log(f"[prepare] {folder.name}: {b - a} frames, face missing in {missing:.0%}")
    return written


def prepare_dir(video_dir: str | Path, out: str | Path, log: Callable[[str], None] = print, **kw) -> list[Path]:
    """Prepare every video under ``video_dir``; a bad video is reported and skipped."""
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise FileNotFoundError(f"{video_dir} is not a folder of videos")
    videos = sorted(p for p in video_dir.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {video_dir}")
    written = []
    for v in videos:
        try:
            written += prepare_video(v, out, log=log, **kw)
        except ValueError as exc:
            log(f"[prepare] skipped {v}: {exc}")
    return written
