"""ffprobe / ffmpeg helpers shared by the media stages.

Every call builds an argv list (never a shell string), passes ``-nostdin`` and restricts input
protocols to ``file,pipe`` so a manifest cell such as ``http://...`` or ``concat:...`` cannot make
ffmpeg open anything but a local file. Failures raise :class:`MediaError` carrying the tail of
ffmpeg's own message; a missing binary raises :class:`~stages.base.SystemicError`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np

from stages.base import SystemicError

PROTOCOLS = "file,pipe"


class MediaError(ValueError):
    """A media file that ffmpeg cannot read or write; the message ends with ffmpeg's own words."""


def require_ffmpeg() -> tuple[str, str]:
    """Paths of ``ffmpeg`` and ``ffprobe``; :class:`SystemicError` with the fix when missing."""
    found = (shutil.which("ffmpeg"), shutil.which("ffprobe"))
    if not all(found):
        raise SystemicError(
            "ffmpeg and ffprobe must be on PATH (install them: `sudo apt-get install ffmpeg` on "
            "Debian/Ubuntu, `brew install ffmpeg` on macOS)")
    return found  # type: ignore[return-value]


def _tail(text: bytes | str, lines: int = 4) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(kept[-lines:]) or "no message"


def input_args(path: str | Path) -> list[str]:
    """``-protocol_whitelist file,pipe -i PATH`` (the whitelist is an input option)."""
    return ["-protocol_whitelist", PROTOCOLS, "-i", str(path)]


def run_ffmpeg(args: Sequence[str], *, what: str, cwd: str | Path | None = None) -> str:
    """Run ``ffmpeg -nostdin -hide_banner -y ARGS``; returns stderr; raises :class:`MediaError`."""
    ffmpeg, _ = require_ffmpeg()
    argv = [ffmpeg, "-nostdin", "-hide_banner", "-y", *map(str, args)]
    proc = subprocess.run(argv, capture_output=True, cwd=cwd, check=False)
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise MediaError(f"{what} failed (ffmpeg: {_tail(stderr)})")
    return stderr


def probe(path: str | Path) -> dict[str, Any]:
    """ffprobe's JSON (``format`` and ``streams``) of a local file."""
    _, ffprobe = require_ffmpeg()
    if "://" in str(path):
        raise MediaError(f"{path} is a URL; only local files are read: download it and give its path")
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path} does not exist or is not a file")
    argv = [ffprobe, "-v", "error", "-protocol_whitelist", PROTOCOLS, "-print_format", "json",
            "-show_format", "-show_streams", str(path)]
    proc = subprocess.run(argv, capture_output=True, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise MediaError(f"{path.name} is not a readable media file (ffprobe: {_tail(proc.stderr)})")
    info = json.loads(proc.stdout or b"{}")
    info.setdefault("streams", [])
    info.setdefault("format", {})
    return info


def first_stream(info: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The first stream of ``kind`` (``audio`` / ``video``) in a :func:`probe` result, skipping
    cover-art pictures attached to audio files."""
    for stream in info.get("streams", []):
        if stream.get("codec_type") != kind:
            continue
        if kind == "video" and stream.get("disposition", {}).get("attached_pic"):
            continue
        return stream
    return None


def stream_fps(stream: dict[str, Any]) -> float:
    """Average frame rate of a video stream (0.0 when unknown)."""
    for key in ("avg_frame_rate", "r_frame_rate"):
        text = stream.get(key) or "0/0"
        num, _, den = text.partition("/")
        if den and float(den) != 0:
            return float(Fraction(int(num), int(den)))
    return 0.0


def media_duration(info: dict[str, Any], kind: str | None = None) -> float:
    """Duration in seconds of a stream of ``kind`` (or of the container when ``kind`` is None)."""
    if kind is not None:
        stream = first_stream(info, kind)
        if stream and stream.get("duration") not in (None, "N/A"):
            return float(stream["duration"])
    value = info.get("format", {}).get("duration")
    return float(value) if value not in (None, "N/A") else 0.0


def decode_audio(path: str | Path, sr: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Decode the first audio stream to float32 mono at ``sr`` Hz (ffmpeg's resampler; channels
    are averaged). ``max_seconds`` stops decoding there (a bound on memory for huge files)."""
    ffmpeg, _ = require_ffmpeg()
    limit = ["-t", f"{float(max_seconds):.3f}"] if max_seconds else []
    argv = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", *input_args(path),
            "-map", "0:a:0", *limit, "-ac", "1", "-ar", str(int(sr)), "-f", "f32le",
            "-acodec", "pcm_f32le", "pipe:1"]
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        raise MediaError(f"cannot decode the audio of {Path(path).name} (ffmpeg: {_tail(proc.stderr)})")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32, copy=True)


def normalise_video(src: str | Path, dst: str | Path, *, fps: int = 25, max_side: int = 1280,
                    crf: int = 16) -> None:
    """Re-encode a driving video to constant ``fps``, video only, rotation applied, even sides no
    longer than ``max_side`` (aspect kept), near-lossless H.264."""
    scale = (f"scale=w='min({max_side},iw)':h='min({max_side},ih)':force_original_aspect_ratio="
             "decrease:force_divisible_by=2")
    run_ffmpeg([*input_args(src), "-map", "0:v:0", "-an", "-sn", "-dn",
                "-vf", f"fps={fps},{scale},format=yuv420p", "-c:v", "libx264", "-preset", "veryfast",
                "-crf", str(crf), str(dst)], what=f"converting {Path(src).name} to {fps} fps")


def iter_video_frames(path: str | Path, *, fps: float | None = None,
                      chunk: int = 32) -> Iterator[np.ndarray]:
    """Stream RGB frames of a video as uint8 arrays ``(n<=chunk, H, W, 3)`` without holding the
    whole video in memory. ``fps`` resamples on the fly (None keeps the stream's frames)."""
    info = probe(path)
    stream = first_stream(info, "video")
    if stream is None:
        raise MediaError(f"{Path(path).name} has no video stream")
    width, height = int(stream["width"]), int(stream["height"])
    rotation = stream_rotation(stream)
    if rotation in (90, 270):  # ffmpeg auto-rotates while decoding
        width, height = height, width
    ffmpeg, _ = require_ffmpeg()
    vf = [f"fps={fps}"] if fps else []
    argv = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", *input_args(path), "-map", "0:v:0",
            *(["-vf", ",".join(vf)] if vf else []), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        try:
            while True:
                buf = _read_exact(proc.stdout, frame_bytes * chunk)
                n = len(buf) // frame_bytes
                if n:
                    yield np.frombuffer(buf[: n * frame_bytes], np.uint8).reshape(n, height, width, 3)
                if len(buf) < frame_bytes * chunk:
                    break
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            err.seek(0)
            raise MediaError(f"cannot decode the frames of {Path(path).name} (ffmpeg: {_tail(err.read())})")


def video_to_frames(path: str | Path, fps: float | None = 25) -> np.ndarray:
    """All frames of a video at ``fps`` as one ``(N, H, W, 3)`` uint8 array (short videos only)."""
    chunks = list(iter_video_frames(path, fps=fps))
    if not chunks:
        raise MediaError(f"{Path(path).name} has no decodable frames")
    return np.concatenate(chunks, axis=0)


def stream_rotation(stream: dict[str, Any]) -> int:
    """Display rotation (0, 90, 180, 270) of a video stream from its side data or tag."""
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    tag = stream.get("tags", {}).get("rotate")
    return int(tag) % 360 if tag else 0


def _read_exact(pipe: IO[bytes], size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        data = pipe.read(size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class FfmpegWriter:
    """Stream raw RGB frames into ``ffmpeg`` -> H.264 yuv420p (video only) at a fixed fps (an
    integer or a rational such as ``"30000/1001"``).

    Odd sides are cropped by one pixel (yuv420p needs even sides). Use as a context manager; on an
    exception the partial output is removed.
    """

    def __init__(self, path: str | Path, width: int, height: int, *, fps: int | str = 25, crf: int = 20,
                 preset: str = "medium"):
        ffmpeg, _ = require_ffmpeg()
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.frames = 0
        argv = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
                "-r", str(fps), "-protocol_whitelist", PROTOCOLS, "-i", "pipe:0", "-an",
                "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p",
                "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-r", str(fps), str(self.path)]
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._err)

    def write(self, frames: np.ndarray) -> None:
        """Append one frame ``(H, W, 3)`` or a batch ``(n, H, W, 3)`` of uint8 RGB."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected uint8 frames of shape (n, {self.height}, {self.width}, 3), "
                             f"got {frames.dtype} {frames.shape}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError as exc:
            self._proc.wait()
            raise MediaError(f"ffmpeg stopped while encoding {self.path.name} "
                             f"(ffmpeg: {self._stderr()})") from exc
        self.frames += len(frames)

    def close(self) -> None:
        """Finish the file; raises :class:`MediaError` when ffmpeg failed."""
        assert self._proc.stdin is not None
        if not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        code = self._proc.wait()
        message = self._stderr()
        self._err.close()
        if code != 0:
            raise MediaError(f"encoding {self.path.name} failed (ffmpeg: {message})")
        if self.frames == 0:
            raise MediaError(f"no frames were written to {self.path.name}")

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial file."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if not self._err.closed:
            self._err.close()
        self.path.unlink(missing_ok=True)

    def _stderr(self) -> str:
        if self._err.closed:
            return "no message"
        self._err.seek(0)
        return _tail(self._err.read())

    def __enter__(self) -> "FfmpegWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
