"""Reading a source video for data preparation: probe, 16 kHz mono audio, 25 fps RGB frames.

ffmpeg and ffprobe run with argv lists and only the file and pipe protocols. A problem that is
the video's own (unreadable, no video stream, no audio) raises :class:`VideoProblem` with a
``reason`` code, so that the data preparation job records it and goes on with the other videos;
a missing ffmpeg binary is systemic and raises ``RuntimeError``.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fixtalk.train.data_format import FPS, SAMPLE_RATE

_PROTOCOLS = ["-protocol_whitelist", "file,pipe"]


class VideoProblem(ValueError):
    """A video (or a part of it) that gives no clips: ``reason`` is a short code (unreadable,
    no_video_stream, no_audio, no_face, several_faces, too_short), ``seconds`` the footage lost."""

    def __init__(self, reason: str, message: str, seconds: float = 0.0):
        super().__init__(message)
        self.reason = reason
        self.seconds = float(seconds)


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise RuntimeError(f"{cmd[0]} not found: install ffmpeg (Debian package ffmpeg)") from exc


def probe(path: Path) -> dict:
    """Width, height, duration (s) and whether the file has audio (ffprobe)."""
    res = _run(["ffprobe", "-v", "error", *_PROTOCOLS, "-show_entries",
                "format=duration:stream=codec_type,width,height", "-of", "json", str(path)])
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip().splitlines()
        why = err[-1].replace(f"{path}: ", "") if err else "no output"
        raise VideoProblem("unreadable", f"{path}: ffprobe cannot read it ({why}); "
                           "re-encode it (ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4) or leave it out")
    info = json.loads(res.stdout or b"{}")
    streams = info.get("streams", [])
    duration = float(info.get("format", {}).get("duration") or 0.0)
    video = [s for s in streams if s.get("codec_type") == "video" and s.get("width")]
    if not video:
        raise VideoProblem("no_video_stream", f"{path}: no video stream (an audio-only file?); "
                           "training clips need the speaker's face: leave it out of VIDEO_DIR", duration)
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if not has_audio:
        raise VideoProblem("no_audio", f"{path}: no audio stream; training clips need the speech: "
                           "use the version of the video with its sound", duration)
    return {"width": int(video[0]["width"]), "height": int(video[0]["height"]), "duration": duration}


def read_audio(path: Path) -> np.ndarray:
    """The first audio stream as float32 16 kHz mono."""
    res = _run(["ffmpeg", "-v", "error", *_PROTOCOLS, "-i", str(path), "-vn", "-ac", "1", "-ar",
                str(SAMPLE_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"])
    if res.returncode != 0:
        raise VideoProblem("unreadable", f"{path}: ffmpeg cannot decode its audio "
                           f"({res.stderr.decode(errors='replace').strip()[-300:]}); re-encode it")
    return np.frombuffer(res.stdout, dtype="<i2").astype(np.float32) / 32768.0


def iter_frames(path: Path, width: int, height: int) -> Iterator[np.ndarray]:
    """RGB uint8 frames resampled to 25 fps, streamed from an ffmpeg pipe (read to the end)."""
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
        code = proc.wait()
    if code != 0:
        raise VideoProblem("unreadable", f"{path}: ffmpeg failed while decoding frames "
                           f"({err.strip()[-300:]}); re-encode it")
