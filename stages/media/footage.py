"""Footage as an input: checking a ``source_video`` / ``presenter_video``, reading its frames at
its own constant frame rate, mapping output frames onto it, and its cached face track.

* :func:`probe_footage` refuses what cannot be dubbed, naming the field and the fix: a missing,
  empty or unreadable file, an audio-only file, a still image given as a video, a video without
  decodable frames.
* :func:`footage_frames` streams RGB frames at the footage's average frame rate (``fps`` filter:
  variable-rate footage becomes constant-rate, the frame times the output keeps).
* :func:`footage_index` maps the output's frames onto the footage's for ``dub.extend``: footage
  longer than the speech is cut; shorter footage is played back and forth (``pingpong``), from
  the start again (``loop``) or holds its last frame (``freeze``).
* :func:`cached_track` runs :class:`stages.face.track.FaceTracker` once per footage content and
  tracking options (``OUT/work/_tracks/<key>.npz``) and picks the footage's reference frame: the
  most frontal usable frame with the least open mouth, the presenter's "portrait" for the face
  crop, the identity reference of QC and the still adaptation.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fixtalk.measure.faces import mouth_opening
from stages.base import ClipError
from stages.face.track import FaceTrack, FaceTracker, FootageFaceError, turn_proxy
from stages.media.av import (
    MediaError,
    first_stream,
    iter_video_frames,
    media_duration,
    probe,
    stream_fps,
    stream_rotation,
)

EXTEND_POLICIES = ("pingpong", "loop", "freeze")
#: Container formats that hold still pictures, not video.
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe",
                 "jpegxl_pipe", "heif")
TRACK_VERSION = 1


def is_still_image(info: dict[str, Any]) -> bool:
    """Whether ffprobe's ``info`` describes a still picture (an image container, or one frame of
    no duration) rather than a video."""
    fmt = str(info.get("format", {}).get("format_name", "")).split(",")
    stream = first_stream(info, "video") or {}
    frames = int(stream["nb_frames"]) if str(stream.get("nb_frames", "")).isdigit() else 0
    return any(f in fmt for f in IMAGE_FORMATS) or (frames == 1 and media_duration(info, "video") < 0.1)


def probe_footage(path: Any, field: str) -> dict[str, Any]:
    """``{fps, rate, width, height, duration_s, has_audio}`` of a footage file, or a
    :class:`ClipError` naming ``field`` and the fix."""
    src = Path(str(path))
    if src.is_file() and src.stat().st_size == 0:
        raise ClipError(f"{src.name} is an empty file (0 bytes); give the presenter's video",
                        field=field, error_type="UnreadableVideo")
    try:
        info = probe(src)
    except MediaError as exc:
        raise ClipError(f"{exc}; give a video file (MP4, MOV, MKV, WebM, ...)", field=field,
                        error_type="UnreadableVideo") from exc
    stream = first_stream(info, "video")
    has_audio = first_stream(info, "audio") is not None
    if stream is None:
        what = "an audio-only file" if has_audio else "not a video"
        raise ClipError(f"{src.name} is {what}; give a video of the presenter (the speech goes in "
                        "the audio column)", field=field, error_type="NotAVideo")
    if is_still_image(info):
        raise ClipError(f"{src.name} is a still image, not a video; put it in the portrait column "
                        "(a still is animated, not dubbed) or give the presenter's video",
                        field=field, error_type="NotAVideo")
    rate = footage_rate(stream)
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    rotation = stream_rotation(stream)
    if rotation in (90, 270):
        width, height = height, width
    return {"fps": float(rate), "rate": f"{rate.numerator}/{rate.denominator}", "width": width,
            "height": height, "duration_s": media_duration(info, "video"), "has_audio": has_audio}


def footage_rate(stream: dict[str, Any]) -> Fraction:
    """The stream's average frame rate as a fraction (25 when unknown or absurd)."""
    fps = stream_fps(stream)
    if not 1.0 <= fps <= 240.0:
        return Fraction(25)
    for key in ("avg_frame_rate", "r_frame_rate"):
        num, _, den = str(stream.get(key) or "0/0").partition("/")
        if den and int(den) and abs(int(num) / int(den) - fps) < 1e-6:
            return Fraction(int(num), int(den)).limit_denominator(1001)
    return Fraction(fps).limit_denominator(1001)


def footage_frames(path: Any, rate: str, chunk: int = 16, field: str = "source_video"
                   ) -> Iterator[np.ndarray]:
    """Chunks (n, H, W, 3) uint8 of the footage at the constant ``rate`` ("num/den")."""
    try:
        yield from iter_video_frames(Path(str(path)), fps=rate, chunk=chunk)
    except MediaError as exc:
        raise ClipError(str(exc), field=field, error_type="UnreadableVideo") from exc


def footage_index(n_source: int, n_out: int, policy: str) -> np.ndarray:
    """Footage frame index of each of ``n_out`` output frames (see the module docstring)."""
    if policy not in EXTEND_POLICIES:
        raise ValueError(f"dub.extend={policy!r}: expected one of {', '.join(EXTEND_POLICIES)}")
    t = np.arange(n_out)
    if n_source <= 0:
        raise ValueError("the footage has no frames")
    if policy == "loop":
        return t % n_source
    if policy == "freeze":
        return np.minimum(t, n_source - 1)
    if n_source == 1:
        return np.zeros(n_out, dtype=np.int64)
    k = t % (2 * n_source - 2)
    return np.where(k < n_source, k, 2 * n_source - 2 - k)


def content_hash(path: Any) -> str:
    """sha256 of a file's bytes (hex, 24 characters)."""
    h = hashlib.sha256()
    with open(str(path), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:24]


def reference_frame(track: FaceTrack, shot: int | None = None) -> int:
    """The usable frame (of ``shot``, or of the whole footage) that is most frontal with the least
    open mouth (ties: the earliest); -1 when the shot has no usable frame."""
    inside = np.ones(len(track), bool) if shot is None else track.shot == shot
    usable = np.nonzero(track.usable & inside)[0]
    if not len(usable) and shot is not None:
        return -1
    if not len(usable):
        usable = np.nonzero(np.isfinite(track.landmarks[:, 0, 0]))[0]
    scores = [abs(turn_proxy(track.landmarks[t])) + 2.0 * mouth_opening(track.landmarks[t]) for t in usable]
    return int(usable[int(np.argmin(scores))])


def cached_track(path: Any, field: str, rate: str, cache_dir: Path, tracker: FaceTracker,
                 track_cfg: Any) -> tuple[Path, FaceTrack, int]:
    """(track file, track, reference frame index) of a footage, tracked once per content and
    options; a footage without a usable face is the row's :class:`ClipError` (cached too)."""
    key = hashlib.sha256(json.dumps([content_hash(path), rate, tracker.size, tracker.crop_scale,
                                     tracker.center_shift, asdict(track_cfg), TRACK_VERSION],
                                    sort_keys=True).encode()).hexdigest()[:24]
    file, error = cache_dir / f"{key}.npz", cache_dir / f"{key}.error.json"
    if error.is_file():
        meta = json.loads(error.read_text())
        raise ClipError(meta["message"], field=field, error_type=meta["kind"])
    if not file.is_file():
        try:
            track = tracker.track(footage_frames(path, rate, field=field), float(Fraction(rate)))
        except FootageFaceError as exc:
            error.write_text(json.dumps({"message": str(exc), "kind": exc.kind}))
            raise ClipError(str(exc), field=field, error_type=exc.kind) from exc
        if len(track) == 0:
            raise ClipError(f"{Path(str(path)).name} has no decodable frames; give a playable video",
                            field=field, error_type="UnreadableVideo")
        track.save(file)
    track = FaceTrack.load(file)
    return file, track, reference_frame(track)


def shot_references(track: FaceTrack) -> dict[int, int]:
    """{shot: its reference frame} for every shot with a usable frame."""
    refs = {int(s): reference_frame(track, int(s)) for s in np.unique(track.shot)}
    return {s: i for s, i in refs.items() if i >= 0}


def read_frames(path: Any, rate: str, indices: set[int], field: str = "source_video"
                ) -> dict[int, np.ndarray]:
    """{index: frame (H, W, 3) uint8} of the footage at ``rate``, in one decoding pass."""
    wanted, found, seen = set(int(i) for i in indices), {}, 0
    for chunk in footage_frames(path, rate, chunk=16, field=field):
        for k in wanted.intersection(range(seen, seen + len(chunk))):
            found[k] = np.ascontiguousarray(chunk[k - seen])
        seen += len(chunk)
        if len(found) == len(wanted):
            break
    missing = wanted - set(found)
    if missing:
        raise ClipError(f"frame {min(missing)} is past the end of the footage ({seen} frames)",
                        field=field, error_type="UnreadableVideo")
    return found


def read_frame(path: Any, rate: str, index: int, field: str = "source_video") -> np.ndarray:
    """One frame (H, W, 3) uint8 of the footage at ``rate``."""
    return read_frames(path, rate, {index}, field)[int(index)]
