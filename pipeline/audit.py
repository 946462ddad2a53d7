"""``fixtalk audit OUT``: list the clips of a run that match QC filters.

Examples::

    fixtalk audit OUT --metric csim_mean --below 0.93          # identity losses (dlib scale)
    fixtalk audit OUT --qc fail --format csv > flagged.csv
    fixtalk audit OUT --qc warn,fail --ids-only > redo.txt     # then: fixtalk run M --only redo.txt
    fixtalk audit OUT --status failed --format json
    fixtalk audit OUT --metric script_wer --above 0.5              # audio that is not the script
    fixtalk audit OUT --credentials invalid                     # clips without valid C2PA credentials

Filters combine with AND. ``--qc`` and ``--status`` take comma-separated values. A row whose
metric is missing (NaN, e.g. a clip that failed before QC) never matches ``--below`` / ``--above``.
``--credentials`` reads the content credentials of every delivered clip (``OUT/clips/<clip_id>.mp4``
of rows ok or skipped) as ``fixtalk verify`` does and adds a ``credentials`` column: ``invalid``
lists clips with no manifest, a tampered one or a missing file; an untrusted signer is valid.
CSV output guards against formula injection: a text cell starting with ``=``, ``+``, ``-``, ``@``
(or a tab / carriage return) is prefixed with a single quote; numbers are written as numbers.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

DEFAULT_COLUMNS = ["clip_id", "status", "qc_status", "csim_mean", "face_presence", "mouth_motion_speech",
                   "pause_motion_ratio", "phone_corr", "duration_diff_s", "lufs", "script_wer", "qc_reasons",
                   "error_message"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fixtalk audit", description=__doc__.split("\n")[0])
    p.add_argument("out", help="the run's output folder (holds results.parquet)")
    p.add_argument("--metric", help="numeric results column to filter on, e.g. csim_mean")
    p.add_argument("--below", type=float, help="keep rows with METRIC < this value")
    p.add_argument("--above", type=float, help="keep rows with METRIC > this value")
    p.add_argument("--qc", help="keep rows with this qc_status (pass, warn, fail; comma list)")
    p.add_argument("--status", help="keep rows with this status (ok, failed; comma list)")
    p.add_argument("--credentials", choices=("invalid", "valid"),
                   help="keep delivered clips whose content credentials (C2PA) are invalid / valid")
    p.add_argument("--trust", action="append", default=[], metavar="CA.pem",
                   help="with --credentials: PEM file of CA certificates to trust (repeatable)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--columns", help="comma-separated columns to print (default: a QC summary)")
    p.add_argument("--ids-only", action="store_true",
                   help="print matching clip ids one per line (input of `fixtalk run --only`)")
    return p


class AuditError(ValueError):
    """A usage problem: the message says what to change."""


def select(df: pd.DataFrame, *, metric: str | None = None, below: float | None = None,
           above: float | None = None, qc: str | None = None, status: str | None = None,
           credentials: str | None = None) -> pd.DataFrame:
    """The rows of ``df`` matching every given filter (``credentials`` needs the column that
    :func:`add_credentials` makes)."""
    keep = pd.Series(True, index=df.index)
    if credentials:
        delivered = df["status"].isin(("ok", "skipped")) if "status" in df.columns else keep
        valid = df["credentials"].astype(str).str.startswith("valid")
        keep &= delivered & (valid if credentials == "valid" else ~valid)
    if (below is not None or above is not None) and not metric:
        raise AuditError("--below/--above need --metric COLUMN (e.g. --metric csim_mean)")
    if metric:
        if metric not in df.columns:
            numeric = sorted(c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]))
            raise AuditError(f"--metric {metric!r} is not a results column; numeric columns: "
                             f"{', '.join(numeric)}")
        if below is None and above is None:
            raise AuditError("--metric needs --below X and/or --above X")
        values = pd.to_numeric(df[metric], errors="coerce")
        if below is not None:
            keep &= values < below
        if above is not None:
            keep &= values > above
    for col, wanted in (("qc_status", qc), ("status", status)):
        if wanted:
            allowed = {w.strip() for w in wanted.split(",") if w.strip()}
            column = df[col] if col in df.columns else pd.Series(None, index=df.index)
            keep &= column.isin(allowed)
    return df[keep.fillna(False)]


def add_credentials(df: pd.DataFrame, out: Path, trust_pem: bytes | None = None) -> pd.DataFrame:
    """``df`` with a ``credentials`` column: the verdict on ``OUT/clips/<clip_id>.mp4`` of each
    delivered row (:func:`pipeline.verify.credentials_column`), ``no clip`` for the others."""
    from pipeline.verify import credentials_column

    delivered = df["status"].isin(("ok", "skipped")) if "status" in df.columns else pd.Series(True, index=df.index)
    paths = [str(out / "clips" / f"{cid}.mp4") if ok else None for cid, ok in zip(df["clip_id"], delivered)]
    return df.assign(credentials=credentials_column(paths, trust_pem))


def csv_cell(value: Any) -> Any:
    """A cell safe to open in a spreadsheet: text starting with a formula character gets a
    leading single quote; missing values become empty; numbers stay numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in df.columns])
    for row in df.itertuples(index=False):
        writer.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


def to_json(df: pd.DataFrame) -> str:
    records = json.loads(df.to_json(orient="records", default_handler=str))
    return json.dumps(records, indent=1)


def to_table(df: pd.DataFrame, width: int = 60) -> str:
    if df.empty:
        return "(no matching clips)"

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        text = str(v).replace("\n", " ")
        return text if len(text) <= width else text[: width - 3] + "..."

    rows = [[str(c) for c in df.columns]] + [[fmt(v) for v in r] for r in df.itertuples(index=False)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 (listing printed, possibly empty), 2 (usage problem, message on stderr)."""
    args = build_parser().parse_args(argv)
    results = Path(args.out) / "results.parquet"
    if not results.is_file():
        print(f"fixtalk audit: {results} not found; give the OUT folder of a finished "
              "`fixtalk run`", file=sys.stderr)
        return 2
    df = pd.read_parquet(results)
    try:
        if args.credentials:
            from pipeline.verify import read_trust

            df = add_credentials(df, Path(args.out), read_trust(args.trust))
        hits = select(df, metric=args.metric, below=args.below, above=args.above, qc=args.qc,
                      status=args.status, credentials=args.credentials)
    except OSError as exc:
        print(f"fixtalk audit: --trust: {exc}", file=sys.stderr)
        return 2
    except AuditError as exc:
        print(f"fixtalk audit: {exc}", file=sys.stderr)
        return 2
    if args.ids_only:
        for clip_id in hits.get("clip_id", pd.Series(dtype=str)).astype(str):
            print(clip_id)
        return 0
    wanted = [c.strip() for c in args.columns.split(",")] if args.columns else DEFAULT_COLUMNS
    if args.metric and args.metric not in wanted:
        wanted.insert(1, args.metric)
    if args.credentials and "credentials" not in wanted:
        wanted.insert(2, "credentials")
    unknown = [c for c in wanted if c not in df.columns and args.columns]
    if unknown:
        print(f"fixtalk audit: unknown --columns {', '.join(unknown)}", file=sys.stderr)
        return 2
    hits = hits[[c for c in wanted if c in hits.columns]]
    text = {"csv": to_csv, "json": to_json, "table": to_table}[args.format](hits)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
