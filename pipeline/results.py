"""``OUT/results.parquet`` (one row per manifest row) and ``OUT/run.json`` (the run's summary)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from pipeline.ledger import _to_table, write_parquet_atomic
from manifests.schema import COLUMNS, ROW_INDEX

#: Leading columns of results.parquet, in order; t_<stage> columns follow in stage order.
LEADING = ("clip_id", "status", "error_stage", "error_type", "error_message", "output_path",
           "duration_s", "frames", "fps")
TRAILING = ("fingerprint", "checkpoint_id", "code_version", ROW_INDEX)
FLOAT_COLUMNS = ("duration_s", "fps", "emotion_intensity", "audio_duration_s", "script_wer")
INT_COLUMNS = ("frames", ROW_INDEX)
TEXT_COLUMNS = ("clip_id", "status", "error_stage", "error_type", "error_message", "output_path",
                "fingerprint", "checkpoint_id", "code_version", "warnings", "c2pa_manifest_id",
                "c2pa_signer") + tuple(
                    c.name for c in COLUMNS if c.kind != "number")
INTERNAL = ("recorded_at", "run_id")
STATUSES = ("ok", "failed", "skipped", "pending")


def _plain(series: pd.Series) -> pd.Series:
    """Arrow-backed or mixed columns as plain object/None so frames from Ray concat cleanly."""
    if isinstance(series.dtype, pd.ArrowDtype) or str(series.dtype) in ("str", "string"):
        values = series.astype(object)
        return values.where(series.notna(), None)
    return series


class FinishedRows:
    """The rows a run has finished, kept compact in the driver.

    A stage batch reaches the driver as a frame of Arrow-backed columns, each column with its own
    buffers: about 0.5 MiB per one-row frame of 130 columns (measured, docs/performance.md), so a
    run holding every batch grew by about that much per clip. Every ``fold_every`` batches the
    recent frames are folded into one plain frame (:func:`_plain` columns, copied by the concat),
    which drops the batches' buffers."""

    def __init__(self, fold_every: int = 32):
        self.fold_every = max(1, int(fold_every))
        self._folded: pd.DataFrame | None = None
        self._recent: list[pd.DataFrame] = []
        self.clip_ids: set[str] = set()
        self.n_rows = 0

    def add(self, batch: pd.DataFrame) -> None:
        self._recent.append(batch)
        self.clip_ids.update(batch["clip_id"])
        self.n_rows += len(batch)
        if len(self._recent) >= self.fold_every:
            self._fold()

    def _fold(self) -> None:
        parts = ([self._folded] if self._folded is not None else []) + [f.apply(_plain) for f in self._recent]
        self._folded = pd.concat(parts, ignore_index=True, sort=False)
        self._recent = []

    def frames(self) -> list[pd.DataFrame]:
        """Every finished row, as frames to :func:`assemble` or concatenate."""
        return ([self._folded] if self._folded is not None else []) + list(self._recent)

    def __len__(self) -> int:
        return self.n_rows


def assemble(parts: Iterable[pd.DataFrame], stage_names: Iterable[str]) -> pd.DataFrame:
    """Concatenate row frames into the results table: typed, ordered by spreadsheet row."""
    frames = [f.apply(_plain) for f in parts if f is not None and len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in LEADING})
    df = pd.concat(frames, ignore_index=True, sort=False)
    df = df.drop(columns=[c for c in INTERNAL if c in df.columns])
    for col in FLOAT_COLUMNS + tuple(c for c in df.columns if c.startswith("t_")):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in INT_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    for col in TEXT_COLUMNS:
        if col in df.columns:
            df[col] = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in df[col]]
    for col in LEADING:
        if col not in df.columns:
            df[col] = None
    timing = [f"t_{n}" for n in stage_names if f"t_{n}" in df.columns]
    timing += sorted(c for c in df.columns if c.startswith("t_") and c not in timing)
    manifest_cols = [c.name for c in COLUMNS if c.name in df.columns and c.name not in LEADING]
    head = list(LEADING) + timing + [c for c in TRAILING if c in df.columns] + manifest_cols
    rest = [c for c in df.columns if c not in head]
    df = df[head + rest]
    if ROW_INDEX in df.columns:
        df = df.sort_values(ROW_INDEX, kind="stable", na_position="last")
    return df.reset_index(drop=True)


def write_results(df: pd.DataFrame, path: Path) -> Path:
    return write_parquet_atomic(_to_table(df), path)


def counts(df: pd.DataFrame) -> dict[str, int]:
    status = df["status"] if "status" in df.columns else pd.Series([], dtype=object)
    out = {s: int((status == s).sum()) for s in STATUSES}
    out["total"] = int(len(df))
    return out


def error_summary(df: pd.DataFrame, top: int = 10) -> list[dict[str, Any]]:
    """Most frequent (error_stage, error_type) pairs among failed rows, with one example."""
    failed = df[df["status"] == "failed"] if "status" in df.columns else df.iloc[0:0]
    rows = []
    for (stage, etype), group in failed.groupby(["error_stage", "error_type"], dropna=False):
        rows.append({"error_stage": stage, "error_type": etype, "count": int(len(group)),
                     "example_clip_id": group["clip_id"].iloc[0],
                     "example_message": group["error_message"].iloc[0]})
    return sorted(rows, key=lambda r: -r["count"])[:top]


def stage_timings(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """p50 / p95 / total seconds per stage over the rows rendered in this run."""
    out = {}
    for col in (c for c in df.columns if c.startswith("t_")):
        values = pd.to_numeric(df[col], errors="coerce").dropna()
        if len(values):
            out[col[2:]] = {"p50": round(float(values.quantile(0.5)), 4),
                            "p95": round(float(values.quantile(0.95)), 4),
                            "total": round(float(values.sum()), 3)}
    return out


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one."""
    try:
        from importlib.metadata import version

        base = version("fixtalk-studio")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        base = "0+unknown"
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():
        try:
            sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return f"{base}+g{sha}{'.dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass
    return base


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "code": code_version()}
    for mod in ("ray", "torch", "numpy", "pandas", "pyarrow"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = "unavailable"
    try:
        first = subprocess.run(["ffmpeg", "-hide_banner", "-version"], capture_output=True, text=True,
                               timeout=10).stdout.splitlines()
        out["ffmpeg"] = first[0] if first else "unknown"
    except (OSError, subprocess.SubprocessError):
        out["ffmpeg"] = "unavailable"
    return out


def write_json_atomic(data: dict[str, Any], path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str, sort_keys=False))
    os.replace(tmp, path)
    return path
