"""Which manifest rows this run renders: shard, ``--only``, the ledger's skip rules, ``--limit``.

Skip rules against the newest ledger record of each clip_id (same fingerprint required):
  * ``ok`` and ``OUT/clips/<clip_id>.mp4`` exists -> not rendered, reported ``skipped`` with the
    previous row's metrics;
  * ``failed`` -> not rendered unless ``--retry-failed``, still reported ``failed``;
  * no record, another fingerprint (inputs, options or checkpoint changed), or a missing output
    -> rendered;
  * not recorded yet, but delivered: ``OUT/clips/<clip_id>.mp4`` exists and the mux stage's
    receipt (:mod:`stages.media.receipt`) has the same fingerprint (the run that made it was
    killed in QC or before the driver recorded it) -> finished from the receipt by the stages after
    mux, never rendered again.
``--only FILE`` renders exactly the listed clip_ids whatever the ledger says.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stages.media.receipt import read_receipt

CLIPS_DIR = "clips"
WORK_DIR = "work"


def clip_output_path(out: str | os.PathLike[str], clip_id: str) -> Path:
    return Path(out) / CLIPS_DIR / f"{clip_id}.mp4"


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    if text is None:
        return None
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4 (shards are numbered 0 to n-1)") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need n >= 1 and 0 <= i < n (shards are numbered 0 to n-1)")
    return i, n


def shard_of(clip_id: Any, n: int) -> int:
    """Deterministic shard of a clip_id (same on every machine and Python process)."""
    digest = hashlib.sha256(str(clip_id or "").encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n


def read_only_ids(path: str | os.PathLike[str]) -> list[str]:
    """clip_ids from a file, one per line (blank lines and ``#`` comments ignored)."""
    ids = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(line)
    return ids


@dataclass
class Selection:
    todo: pd.DataFrame  # rows to run through the stages
    settled: pd.DataFrame  # rows decided without rendering: skipped, failed earlier, invalid
    unselected: pd.DataFrame  # rows outside --only / --limit: previous state or "pending"
    n_out_of_shard: int = 0
    unknown_only_ids: tuple[str, ...] = ()
    finish: pd.DataFrame | None = None  # delivered (receipt + MP4) but not recorded: the stages after mux


def _carry(row: dict[str, Any], prior: dict[str, Any], status: str, out: str | os.PathLike[str]) -> dict[str, Any]:
    """A previous result re-reported: its metrics, today's manifest columns, the given status."""
    merged = {k: v for k, v in prior.items() if k not in ("recorded_at", "run_id")}
    merged.update(row)
    for key in ("error_stage", "error_type", "error_message") + tuple(k for k in prior if k.startswith("t_")):
        merged[key] = prior.get(key)
    for key in ("output_path", "duration_s", "frames", "fps"):
        if key in prior:
            merged[key] = prior[key]
    merged["status"] = status
    if status == "skipped":
        merged["output_path"] = str(clip_output_path(out, row["clip_id"]))
    return merged


def _previous_state(row: dict[str, Any], prior: dict[str, Any] | None, out: str | os.PathLike[str]) -> dict[str, Any]:
    if prior is not None and prior.get("fingerprint") == row.get("fingerprint"):
        if prior.get("status") == "ok" and clip_output_path(out, row["clip_id"]).is_file():
            return _carry(row, prior, "skipped", out)
        if prior.get("status") == "failed":
            return _carry(row, prior, "failed", out)
    return dict(row, status="pending")


def select(frame: pd.DataFrame, prior: pd.DataFrame, out: str | os.PathLike[str], *,
           retry_failed: bool = False, only: list[str] | None = None,
           shard: tuple[int, int] | None = None, limit: int | None = None) -> Selection:
    """Split validated rows (with ``fingerprint``) into todo / settled / unselected."""
    records = prior.set_index("clip_id").to_dict(orient="index") if len(prior) and "clip_id" in prior else {}
    only_set = set(only) if only is not None else None
    clips_dir = Path(out) / CLIPS_DIR
    # one listing of OUT/clips instead of a stat per row (a 100,000-row manifest plans in seconds)
    present_mp4 = {e.name for e in os.scandir(clips_dir) if e.is_file()} if clips_dir.is_dir() else set()
    todo: list[dict] = []
    finish: list[dict] = []
    settled: list[dict] = []
    unselected: list[dict] = []
    n_out = 0
    for row in frame.to_dict(orient="records"):
        clip_id = row.get("clip_id")
        if shard is not None and shard_of(clip_id, shard[1]) != shard[0]:
            n_out += 1
            continue
        previous = records.get(clip_id) if row.get("status") == "ok" else None
        if only_set is not None and clip_id not in only_set:
            unselected.append(_previous_state(row, previous, out) if row["status"] == "ok" else row)
            continue
        if row["status"] != "ok":
            settled.append(row)
            continue
        if only_set is None and previous is not None and previous.get("fingerprint") == row["fingerprint"]:
            if previous.get("status") == "ok" and f"{clip_id}.mp4" in present_mp4:
                settled.append(_carry(row, previous, "skipped", out))
                continue
            if previous.get("status") == "failed" and not retry_failed:
                settled.append(_carry(row, previous, "failed", out))
                continue
        delivered = (read_receipt(row["work_dir"], row["fingerprint"], clip_output_path(out, clip_id))
                     if only_set is None and row.get("work_dir") and f"{clip_id}.mp4" in present_mp4 else None)
        if delivered is not None:
            finish.append({**row, **delivered, "status": "ok"})  # the stages' columns as delivered
            continue
        todo.append(row)
    if limit is not None and len(todo) > limit:
        for row in todo[limit:]:
            unselected.append(_previous_state(row, records.get(row["clip_id"]), out))
        todo = todo[:limit]
    present = set(frame["clip_id"].dropna()) if len(frame) else set()
    unknown = tuple(sorted(only_set - present)) if only_set is not None else ()

    def as_frame(rows: list[dict]) -> pd.DataFrame:
        return pd.DataFrame.from_records(rows, columns=list(frame.columns)) if not rows else pd.DataFrame(rows)

    return Selection(as_frame(todo), as_frame(settled), as_frame(unselected), n_out, unknown,
                     pd.DataFrame(finish))
