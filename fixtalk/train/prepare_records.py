"""Where data preparation keeps its state in OUT, so that a rerun resumes.

    OUT/<video_id>_<k>/        clip folders (data_format), renamed into place when complete
    OUT/.partial/<clip>/       a clip being written (a killed job leaves it here; the next run
                               clears it; list_clips never reads dot-folders)
    OUT/_videos/<video_id>.json  the done-record of a video, written after its clips: the clips
                               made, the footage dropped and why, the settings used

``video_id`` is the video's path under VIDEO_DIR without its extension, folders joined by
``__`` (MEAD's ``M003/video/front/angry/level_1/001.mp4`` -> ``M003__video__front__angry__level_1__001``),
so videos of the same name in different folders do not collide.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
RECORDS = "_videos"
PARTIAL = ".partial"


class UsageError(ValueError):
    """The job cannot start as asked (VIDEO_DIR, OUT or the settings); the message says what to do."""


@dataclass
class VideoTask:
    """One source video: its ``path``, its ``source`` path under VIDEO_DIR, the ``video_id``
    that names its clips and the ``identity`` (the first folder under VIDEO_DIR, or the file's
    stem for a video directly in it) written into their meta.json."""

    path: str
    source: str
    video_id: str
    identity: str


def video_id(relative: Path) -> str:
    """Clip-name stem of a video at ``relative`` under VIDEO_DIR (see the module docstring)."""
    parts = [*relative.parent.parts, relative.stem]
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts)


def list_videos(video_dir: str | Path) -> list[VideoTask]:
    """Every video (by extension) under ``video_dir``, sorted; clear errors for an empty folder
    or two videos that would share a video_id."""
    root = Path(video_dir)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder of videos: give the folder that holds them")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise UsageError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {root}")
    tasks, seen = [], {}
    for p in paths:
        rel = p.relative_to(root)
        vid = video_id(rel)
        if vid in seen:
            raise UsageError(f"{seen[vid]} and {rel} would both be named {vid!r}: rename one of them")
        seen[vid] = rel
        identity = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        tasks.append(VideoTask(str(p), rel.as_posix(), vid, identity))
    return tasks


def record_path(out: str | Path, vid: str) -> Path:
    return Path(out) / RECORDS / f"{vid}.json"


def write_json_atomic(path: Path, data: dict) -> Path:
    """Write JSON under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path


def read_record(out: str | Path, vid: str) -> dict | None:
    """The done-record of video ``vid``, or None if it has not finished."""
    path = record_path(out, vid)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is damaged ({exc}); delete it to prepare that video again") from exc


def read_records(out: str | Path) -> list[dict]:
    """Every done-record in OUT, sorted by video."""
    folder = Path(out) / RECORDS
    found = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return sorted((read_record(out, p.stem) for p in found), key=lambda r: r["source"])


def move_into_place(tmp: Path, final: Path) -> Path:
    """Rename a finished clip folder onto ``final`` (replacing one a killed run left there)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def clear_partial(out: str | Path) -> None:
    """Remove the clips a killed run left half written."""
    shutil.rmtree(Path(out) / PARTIAL, ignore_errors=True)
