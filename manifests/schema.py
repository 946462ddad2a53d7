"""The manifest schema, in one place: columns, their kinds, allowed values and the clip_id rule.

A manifest is a table with one row per clip. Every cell is read as text (the importer never lets a
spreadsheet guess types); :mod:`manifests.validate` turns the text into typed, checked values.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: Emotion labels understood by the motion stage (EDTalk's eight predefined expressions).
EMOTIONS: tuple[str, ...] = (
    "angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised",
)

#: ``clip_id`` is the only name used for output files: letters, digits, ``.``, ``_``, ``-``.
CLIP_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
CLIP_ID_FORBIDDEN = (".", "..")

#: Allowed range of ``emotion_intensity`` (0 = no expression, 1 = the label's own strength).
INTENSITY_RANGE: tuple[float, float] = (0.0, 2.0)
DEFAULT_INTENSITY = 1.0


@dataclass(frozen=True)
class Column:
    """One manifest column. ``kind`` is ``id`` | ``path`` | ``text`` | ``emotion`` | ``number`` |
    ``consent`` (a path when such a file exists, else an identifier kept as written)."""

    name: str
    kind: str
    required: bool = False
    help: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("clip_id", "id", True, "unique name of the clip: letters, digits, '.', '_' or '-', at most 128"),
    Column("portrait", "path", False, "image of the presenter (PNG/JPEG), one face; optional when "
           "source_video is given"),
    Column("audio", "path", False, "speech audio (WAV/MP3/FLAC/...); or give a script instead"),
    Column("script", "text", False, "text to speak when there is no audio; aligned for subtitles"),
    Column("pose_video", "path", False, "optional video whose head pose drives the clip"),
    Column("expression_video", "path", False, "optional video whose expression drives the clip"),
    Column("emotion", "emotion", False, "optional: " + ", ".join(EMOTIONS)),
    Column("emotion_intensity", "number", False, "optional number in [0, 2], default 1.0"),
    Column("presenter_id", "text", False, "optional label grouping clips of one presenter"),
    Column("source_video", "path", False, "footage of one presenter to dub: the output is this video "
           "with the mouth re-rendered to the row's speech"),
    Column("source_transcript", "text", False, "optional: what the presenter says in source_video "
           "(English); the dub's mouths are then recalled by the sounds they make"),
    Column("presenter_video", "path", False, "footage of the presenter that the model is fitted to "
           "before rendering (default for a dub: its source_video)"),
    Column("consent", "consent", False, "optional record of the presenter's agreement: a file "
           "(its name and sha256 are signed into the clip) or an identifier"),
)

COLUMN_BY_NAME = {c.name: c for c in COLUMNS}
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.required)
#: At least one of these columns must exist in the manifest, and each row needs one of them filled.
FACE_COLUMNS: tuple[str, ...] = ("portrait", "source_video")
PATH_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.kind == "path")
#: At least one of these columns must exist in the manifest, and each row needs one of them filled.
SPEECH_COLUMNS: tuple[str, ...] = ("audio", "script")

#: Spreadsheet row number of each manifest row (the header is row 1, the first clip row 2).
ROW_INDEX = "row_index"


def clip_id_problem(value: str | None) -> str | None:
    """Why ``value`` is not a valid clip_id (``None`` when it is)."""
    if value is None or value == "":
        return "clip_id is empty; give every row a unique name such as 'intro_01'"
    if value in CLIP_ID_FORBIDDEN:
        return f"clip_id {value!r} is reserved; use letters or digits, e.g. 'clip_{value.count('.')}'"
    if len(value) > 128:
        return f"clip_id is {len(value)} characters long; use at most 128"
    if not CLIP_ID_RE.match(value):
        bad = sorted({ch for ch in value if not re.match(r"[A-Za-z0-9._-]", ch)})
        shown = " ".join(repr(ch) for ch in bad[:8])
        return (f"clip_id {value!r} contains {shown}; use only letters, digits, '.', '_' and '-' "
                "(no spaces or path separators)")
    return None
