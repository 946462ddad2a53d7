"""The summary of a data preparation: hours of footage kept and dropped, and why.

Every second of every video in OUT (its done-records, :mod:`fixtalk.train.prepare_records`) is
either in a clip (``kept``) or dropped with one reason, so the rows add up to the ``total``:

    OUT/prepare_summary.csv  outcome, videos, pieces, seconds, hours, share (one row per outcome)
    OUT/prepare_summary.md   the same table, then every dropped stretch with its reason
    OUT/prepare_videos.csv   one row per clip or dropped stretch of each video

``pieces`` counts clips written (kept) or stretches of footage dropped. An unreadable file
counts as a video with 0 seconds (its length is unknown).
"""
from __future__ import annotations

import csv
from pathlib import Path

from fixtalk.train.data_format import FPS

REASONS = ("too_short", "no_face", "several_faces", "no_audio", "no_video_stream", "unreadable")
SUMMARY_FIELDS = ("outcome", "videos", "pieces", "seconds", "hours", "share")
VIDEO_FIELDS = ("source", "video_id", "outcome", "clip", "start_s", "stop_s", "seconds", "message")
MAX_PRINTED_DROPS = 20


def summary_rows(records: list[dict]) -> list[dict]:
    """One row per outcome (kept, each drop reason seen) and a ``total`` row."""
    total = sum(r["seconds"] for r in records)
    kept = {"outcome": "kept", "videos": sum(1 for r in records if r["clips"]),
            "pieces": sum(len(r["clips"]) for r in records),
            "seconds": sum(r["kept_seconds"] for r in records)}
    rows = [kept]
    seen = [d["reason"] for r in records for d in r["drops"]]
    for reason in [*REASONS, *sorted(set(seen) - set(REASONS))]:
        if reason not in seen:
            continue
        drops = [(r, d) for r in records for d in r["drops"] if d["reason"] == reason]
        rows.append({"outcome": reason, "videos": len({r["video_id"] for r, _ in drops}),
                     "pieces": len(drops), "seconds": sum(d["seconds"] for _, d in drops)})
    rows.append({"outcome": "total", "videos": len(records), "pieces": sum(r["pieces"] for r in rows),
                 "seconds": total})
    for row in rows:
        row["seconds"] = round(row["seconds"], 2)
        row["hours"] = round(row["seconds"] / 3600.0, 4)
        row["share"] = f"{row['seconds'] / total:.1%}" if total > 0 else "-"
    return rows


def video_rows(records: list[dict]) -> list[dict]:
    """One row per clip or dropped stretch of each video, in frame order."""
    rows = []
    for r in records:
        parts = [("kept", c["name"], c["start"], c["stop"], c["seconds"], "") for c in r["clips"]]
        parts += [(d["reason"], "", d["start"], d["stop"], d["seconds"], d["message"]) for d in r["drops"]]
        for outcome, clip, a, b, secs, message in sorted(parts, key=lambda p: p[2]):
            rows.append({"source": r["source"], "video_id": r["video_id"], "outcome": outcome, "clip": clip,
                         "start_s": a / FPS, "stop_s": b / FPS, "seconds": secs, "message": message})
    return rows


def table_text(rows: list[dict]) -> str:
    """The summary rows as a markdown table."""
    lines = ["| " + " | ".join(SUMMARY_FIELDS) + " |", "|" + "---|" * len(SUMMARY_FIELDS)]
    lines += ["| " + " | ".join(str(row[f]) for f in SUMMARY_FIELDS) + " |" for row in rows]
    return "\n".join(lines)


def drop_lines(records: list[dict], limit: int | None = None) -> list[str]:
    """``- source: reason: message`` for every dropped stretch (the first ``limit``)."""
    lines = [f"- {r['source']}: {d['reason']} ({d['seconds']:.2f} s): {d['message']}"
             for r in records for d in r["drops"]]
    if limit is not None and len(lines) > limit:
        lines = [*lines[:limit], f"- ... {len(lines) - limit} more in prepare_videos.csv"]
    return lines


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_summary(out: str | Path, records: list[dict]) -> str:
    """Write the three summary files into OUT; returns the text to print (table + first drops)."""
    out = Path(out)
    rows = summary_rows(records)
    _write_csv(out / "prepare_summary.csv", SUMMARY_FIELDS, rows)
    _write_csv(out / "prepare_videos.csv", VIDEO_FIELDS, video_rows(records))
    table = table_text(rows)
    drops = drop_lines(records)
    (out / "prepare_summary.md").write_text(
        "# Data preparation summary\n\n" + table + "\n\n## Dropped footage\n\n"
        + ("\n".join(drops) if drops else "none") + "\n")
    printed = drop_lines(records, MAX_PRINTED_DROPS)
    return table + ("\n\ndropped:\n" + "\n".join(printed) if printed else "")
