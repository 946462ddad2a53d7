"""Synthetic presenter footage: a public-domain portrait speaking a sentence, as a video file with
its sound, for dubbing tests and the demo (no real footage ships with the project).

The whole picture is the frame: it is warped by the synthetic self-driven model of
:mod:`fixtalk.train.synthetic` (head yaw/pitch/roll, scale, shift, blinks) and its mouth follows the
visemes of the speech's pocketsphinx phone alignment, so the mouth of the footage moves with its
own words, as a recorded presenter's does. Frame rates other than 25 fps sample the 25 fps tracks
at their own frame times.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from fixtalk.train.data_format import SAMPLE_RATE


def talking_frames(picture: np.ndarray, audio: np.ndarray, text: str, *, size: int = 256,
                   fps: float = 25.0, seed: int = 0, still: bool = False,
                   mouth_amplitude: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N, size, size, 3) uint8, mouth opening track (N,)) of ``picture`` (RGB, one face;
    non-square pictures are centre-cropped to a square) speaking ``audio`` (16 kHz) whose
    transcript is ``text``; N = floor(duration * fps)."""
    from fixtalk.train.speech import align_phones, viseme_track

    seconds = len(audio) / SAMPLE_RATE
    n25 = max(2, int(seconds * 25))
    _, mouth_open, width = viseme_track(align_phones(audio, text), n25, amplitude=mouth_amplitude)
    n = max(1, int(seconds * fps))
    pick = np.minimum(np.round(np.arange(n) * 25.0 / fps).astype(int), n25 - 1)
    frames = mouth_frames(picture, mouth_open, width, size=size, seed=seed, still=still, pick=pick)
    return frames, np.asarray(mouth_open)[pick]


def mouth_frames(picture: np.ndarray, mouth_open: np.ndarray, mouth_width: np.ndarray, *,
                 size: int = 256, seed: int = 0, still: bool = False,
                 pick: np.ndarray | None = None) -> np.ndarray:
    """Frames (N, size, size, 3) uint8 of ``picture`` whose mouth follows the given 25 fps tracks
    (opening as inner-lip gap / mouth width, width factor; :mod:`fixtalk.visemes`), the head
    moving as in the synthetic set (held still with ``still``); ``pick``: the 25 fps frame
    index of each output frame (default: every frame)."""
    import cv2

    from fixtalk.train.synthetic import motion_tracks, portrait_landmarks, render_tracks

    h, w = picture.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(picture[y0:y0 + side, x0:x0 + side])
    lm = portrait_landmarks(square) * (size / side)
    base = cv2.resize(square, (2 * size, 2 * size), interpolation=cv2.INTER_CUBIC)
    n25 = len(mouth_open)
    tracks = motion_tracks(np.random.default_rng(seed), n25, still=still)
    tracks["mouth_open"] = np.asarray(mouth_open, np.float64)
    tracks["mouth_width"] = np.asarray(mouth_width, np.float64)
    pick = np.arange(n25) if pick is None else pick
    frames, _ = render_tracks(base, lm, {k: np.asarray(v)[pick] for k, v in tracks.items()}, size)
    return frames


def write_footage(frames: np.ndarray, fps: float | str, path: str | Path,
                  audio: np.ndarray | None = None, crf: int = 18) -> Path:
    """Encode RGB ``frames`` (N, H, W, 3) at ``fps`` to an H.264 MP4 (odd sides allowed: yuv444p
    then), with ``audio`` (16 kHz mono) as AAC when given."""
    import soundfile as sf

    path = Path(path)
    n, h, w = frames.shape[:3]
    pix = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
    with tempfile.TemporaryDirectory() as tmp:
        sound = []
        if audio is not None:
            wav = Path(tmp) / "audio.wav"
            sf.write(wav, np.asarray(audio, np.float32), SAMPLE_RATE)
            sound = ["-i", str(wav), "-c:a", "aac", "-b:a", "96k", "-shortest"]
        argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0", *sound[:2], "-map", "0:v",
                *(["-map", "1:a"] if audio is not None else []), "-c:v", "libx264", "-preset", "veryfast",
                "-crf", str(crf), "-pix_fmt", pix, *sound[2:], str(path)]
        proc = subprocess.run(argv, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {proc.stderr.decode(errors='replace')[-400:]}")
    return path
