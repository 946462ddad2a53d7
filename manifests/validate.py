"""Manifest validation: manifest-level problems refuse the run, row-level problems fail one row.

:func:`load_manifest` reads a manifest (Parquet, CSV or XLSX) and returns a :class:`Validated`:
the normalised frame (paths absolute, ``emotion`` lower-case, ``emotion_intensity`` a float,
``status`` "ok" or "failed" with ``error_stage="manifest"``) and the list of :class:`Problem`
(each naming the spreadsheet row, the column and the fix).

Manifest-level problems raise :class:`ManifestError`: unreadable file, missing required column,
neither ``audio`` nor ``script`` column, an extra column that clashes with a pipeline column.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from manifests.importer import ManifestError, read_table
from manifests.schema import (
    COLUMNS, DEFAULT_INTENSITY, EMOTIONS, INTENSITY_RANGE, FACE_COLUMNS, PATH_COLUMNS, REQUIRED_COLUMNS,
    ROW_INDEX, SPEECH_COLUMNS, clip_id_problem,
)

__all__ = ["ManifestError", "Problem", "Validated", "load_manifest", "validate_frame"]

#: Columns the pipeline sets itself; a manifest may not bring its own (rename them).
RESERVED_COLUMNS = frozenset({
    "status", "error_stage", "error_type", "error_message", "out_dir", "work_dir", "fingerprint",
    "checkpoint_id", "code_version", "output_path", "duration_s", "frames", "fps",
})
ERROR_STAGE = "manifest"
ERROR_TYPE = "InvalidRow"


@dataclass(frozen=True)
class Problem:
    """One row-level problem: spreadsheet row, clip_id as written, column, what to do."""

    row_index: int
    clip_id: str | None
    field: str
    message: str

    def __str__(self) -> str:
        who = f" (clip_id {self.clip_id!r})" if self.clip_id else ""
        return f"row {self.row_index}{who}, column '{self.field}': {self.message}"


@dataclass
class Validated:
    frame: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    source: Path | None = None

    @property
    def n_failed(self) -> int:
        return int((self.frame["status"] == "failed").sum()) if len(self.frame) else 0


def _check_columns(frame: pd.DataFrame, source: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"{source}: missing required column(s) {', '.join(missing)}; the header row must name "
            f"at least {', '.join(REQUIRED_COLUMNS)}, one of {' or '.join(FACE_COLUMNS)} and one of "
            f"{' or '.join(SPEECH_COLUMNS)}")
    if not any(c in frame.columns for c in FACE_COLUMNS):
        raise ManifestError(f"{source}: missing required column 'portrait' (stills) or 'source_video' "
                            "(footage to dub); the header row needs one of them, or both")
    if not any(c in frame.columns for c in SPEECH_COLUMNS):
        raise ManifestError(f"{source}: needs an 'audio' column, a 'script' column, or both")
    clashes = sorted(c for c in frame.columns if c in RESERVED_COLUMNS or c.startswith("t_"))
    if clashes:
        raise ManifestError(f"{source}: column(s) {', '.join(clashes)} are set by the pipeline; "
                            "rename them in the manifest (e.g. 'my_status')")


def _row_number(value: object, position: int) -> int:
    try:
        number = int(str(value))
        return number if number > 0 else position + 2
    except (TypeError, ValueError):
        return position + 2


def _resolve(value: str, base_dir: Path) -> str:
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = base_dir / path
    return os.path.normpath(str(path))


def _file_problem(raw: str, resolved: str, base_dir: Path) -> str | None:
    if os.path.isfile(resolved):
        if not os.access(resolved, os.R_OK):
            return f"file {resolved} is not readable; fix its permissions"
        if os.path.getsize(resolved) == 0:
            return f"file {resolved} is empty (0 bytes); replace it with the real file"
        return None
    where = "" if os.path.isabs(os.path.expanduser(raw)) else f" (relative paths resolve against {base_dir})"
    if os.path.isdir(resolved):
        return f"{resolved} is a folder, not a file{where}; point at the file itself"
    return f"file not found: {resolved}{where}; fix the path or add the file"


def _consent(raw: str, base_dir: Path) -> str:
    """A consent cell naming an existing file becomes its absolute path (relative paths resolve
    against the manifest's folder); anything else is an identifier, kept as written."""
    text = raw.strip()
    resolved = _resolve(text, base_dir)
    return resolved if text and os.path.isfile(resolved) else text


def _intensity(raw: str | None) -> tuple[float, str | None]:
    if raw is None:
        return DEFAULT_INTENSITY, None
    lo, hi = INTENSITY_RANGE
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_INTENSITY, f"{raw!r} is not a number; give a number from {lo:g} to {hi:g} (default {DEFAULT_INTENSITY:g})"
    if not math.isfinite(value) or not lo <= value <= hi:
        return DEFAULT_INTENSITY, f"{raw!r} is outside [{lo:g}, {hi:g}]; give a number from {lo:g} to {hi:g}"
    return value, None


def validate_frame(frame: pd.DataFrame, base_dir: str | os.PathLike[str], source: str = "manifest") -> Validated:
    """Check an all-text manifest frame (as :func:`manifests.importer.read_table` returns it).

    Returns the normalised frame (one row per input row, same order) and every row problem.
    """
    base_dir = Path(base_dir).resolve()
    _check_columns(frame, source)
    problems: list[Problem] = []
    records: list[dict] = []
    seen: dict[str, int] = {}
    seen_folded: dict[str, tuple[str, int]] = {}
    checked: dict[str, tuple[str, str | None]] = {}  # cell -> (resolved path, problem): one check per file
    for position, raw in enumerate(frame.to_dict(orient="records")):
        row = {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in raw.items()}
        number = _row_number(row.get(ROW_INDEX), position)
        row[ROW_INDEX] = number
        for col in COLUMNS:
            row.setdefault(col.name, None)
        clip_id = row["clip_id"]
        mine: list[Problem] = []

        def bad(col: str, message: str) -> None:
            mine.append(Problem(number, clip_id, col, message))

        why = clip_id_problem(clip_id)
        if why:
            bad("clip_id", why)
        elif clip_id in seen:
            bad("clip_id", f"duplicate of row {seen[clip_id]}; every clip_id must be unique, rename this one")
        elif clip_id.lower() in seen_folded:
            other, other_row = seen_folded[clip_id.lower()]
            bad("clip_id", f"differs from {other!r} (row {other_row}) only by letter case, which collides "
                           "on case-insensitive disks; rename this one")
        else:
            seen[clip_id] = number
            seen_folded[clip_id.lower()] = (clip_id, number)

        for col in PATH_COLUMNS:
            value = row.get(col)
            if value is None:
                if col == "portrait" and row.get("source_video") is None:
                    bad(col, "no portrait given; every row needs an image of the presenter "
                             "(or a source_video to dub)")
                continue
            if value not in checked:
                resolved = _resolve(value, base_dir)
                checked[value] = (resolved, _file_problem(value, resolved, base_dir))
            row[col], why = checked[value]
            if why:
                bad(col, why)

        if row.get("consent") is not None:
            row["consent"] = _consent(str(row["consent"]), base_dir)

        if row.get("audio") is None and row.get("script") is None:
            bad("audio", "the row has neither audio nor script; give an audio file or a script to speak")

        if row.get("source_transcript") is not None and row.get("source_video") is None:
            bad("source_transcript", "is what the presenter says in source_video, and this row has no "
                "source_video; give the footage or leave source_transcript empty")

        emotion = row.get("emotion")
        if emotion is not None:
            if emotion.lower() not in EMOTIONS:
                bad("emotion", f"unknown emotion {emotion!r}; use one of {', '.join(EMOTIONS)} or leave it blank")
            else:
                row["emotion"] = emotion.lower()
        row["emotion_intensity"], why = _intensity(row.get("emotion_intensity"))
        if why:
            bad("emotion_intensity", why)

        row["status"] = "failed" if mine else "ok"
        row["error_stage"] = ERROR_STAGE if mine else None
        row["error_type"] = ERROR_TYPE if mine else None
        row["error_message"] = "; ".join(f"column '{p.field}': {p.message}" for p in mine) if mine else None
        problems.extend(mine)
        records.append(row)
    columns = list(dict.fromkeys([c.name for c in COLUMNS] + list(frame.columns) + [ROW_INDEX]))
    out = pd.DataFrame.from_records(records, columns=columns + ["status", "error_stage", "error_type", "error_message"])
    text_cols = [c for c in out.columns if c not in (ROW_INDEX, "emotion_intensity")]
    out[text_cols] = out[text_cols].astype(object).where(out[text_cols].notna(), None)
    if len(out):
        out[ROW_INDEX] = out[ROW_INDEX].astype("int64")
        out["emotion_intensity"] = out["emotion_intensity"].astype("float64")
        share_presenter_footage(out)
    return Validated(out, problems)


def share_presenter_footage(frame: pd.DataFrame) -> None:
    """Rows of one ``presenter_id`` without a ``presenter_video`` take their presenter's footage
    (the group's first ``presenter_video``, else its first dub's ``source_video``), so the model
    is fitted once per presenter and used for every row of that presenter, still or dub."""
    if "presenter_id" not in frame or not {"presenter_video", "source_video"} & set(frame.columns):
        return
    valid = frame["status"] == "ok"
    footage: dict[str, str] = {}
    for col in ("presenter_video", "source_video"):
        if col not in frame:
            continue
        for pid, value in zip(frame.loc[valid, "presenter_id"], frame.loc[valid, col]):
            if pid is not None and value is not None:
                footage.setdefault(str(pid), value)
    if not footage:
        return
    if "presenter_video" not in frame:
        frame["presenter_video"] = None
    missing = valid & frame["presenter_video"].isna() & frame["presenter_id"].notna()
    frame.loc[missing, "presenter_video"] = [footage.get(str(p)) for p in frame.loc[missing, "presenter_id"]]


def load_manifest(path: str | os.PathLike[str]) -> Validated:
    """Read and validate a manifest file; relative paths resolve against its folder."""
    path = Path(path)
    frame = read_table(path)
    result = validate_frame(frame, path.resolve().parent, str(path))
    result.source = path
    return result
