"""``OUT/report.html``: one self-contained page to look through a run, for producers and engineers.

The page needs no network: CSS and JS are inline (:mod:`pipeline.report_page`), pictures are
``data:`` URIs (histograms as PNG from matplotlib, frame thumbnails and posters as small JPEGs cut
by ffmpeg), and each clip plays in the page from a path relative to ``OUT`` (``<video
preload="none">`` with a poster, so a page of a thousand clips loads nothing until asked), with
its subtitles. It holds the run summary in sentences (:mod:`pipeline.report_summary`; the raw
record stays in ``run.json``, linked), histograms of CSIM and sync, the table of clips (failed and
QC-failing first; sortable by clicking a header or with ``report.html#sort=COLUMN`` /
``#sort=-COLUMN``; filtered by outcome or clip id, or with ``#show=warn``), each clip's QC reasons
in words (:mod:`pipeline.report_words`), the error of every failed row and the identity curves of
flagged clips. A script WER is shown only where the recogniser is trusted
(:func:`stages.script_text.wer_trusted`); elsewhere the cell says "not checked" and why.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from pipeline.report_page import filter_bar, page
from pipeline.report_summary import outcome, summary_html
from pipeline.report_words import (
    STAGES,
    STATUS_HELP,
    STATUS_WORDS,
    reason_sentences,
    transcript_cell,
)
from stages.media.av import input_args, media_duration, probe, require_ffmpeg

#: Table columns (shown when present): (column, header, number format, what it means).
COLUMNS = [
    ("csim_mean", "CSIM mean", ".3f", "likeness of the face to the portrait, 1 = the same face"),
    ("csim_min", "CSIM min", ".3f", "the least alike sampled frame"),
    ("csim_slope", "CSIM /s", "+.4f", "how the likeness changes per second (negative: drifts away)"),
    ("face_presence", "face", ".2f", "share of sampled frames with exactly one face"),
    ("mouth_motion_speech", "mouth moves", ".3f", "how much the mouth opens and closes while the "
     "speech plays (a real speaker: about 0.07)"),
    ("pause_motion_ratio", "moves in pauses", ".2f", "mouth motion in the speech's pauses over that "
     "in speech (a resting mouth: well under 0.4)"),
    ("phone_corr", "phone r", ".2f", "mouth opening against the openness of the aligned speech "
     "sounds (with a script; real footage: about 0.2-0.3)"),
    ("bilabial_closure", "P/B/M open", ".2f", "opening at P/B/M sounds over that at open vowels "
     "(lips should close: low)"),
    ("lse_c", "LSE-C", ".2f", "SyncNet confidence (with SyncNet weights only)"),
    ("lse_d", "LSE-D", ".2f", "SyncNet distance (with SyncNet weights only)"),
    ("duration_diff_s", "dur diff s", "+.3f", "video length minus speech length"),
    ("lufs", "LUFS", ".1f", "loudness"),
    ("script_wer", "script WER", ".2f", "words heard that differ from the script (0 = all "
     "heard); only where the recogniser is trusted, see docs/qc.md"),
    ("script_aligned_share", "script aligned", ".2f", "share of the script's words placed in the "
     "speech by forced alignment"),
    ("dubbed_fraction", "dubbed", ".2f", "share of the footage's frames dubbed"),
    ("outside_psnr_min", "outside dB", ".1f", "dubs: how unchanged the picture outside the mouth is"),
]
#: Table order: failed first, then QC fail, warn, pass (see :func:`report_summary.outcome`).
_RANK = {"failed": 0, "qc_fail": 1, "warn": 2, "ok": 3, "unchecked": 4, "pending": 5}
#: Row CSS class per outcome.
_ROW_CLASS = {"failed": "failed", "qc_fail": "fail", "warn": "warn", "ok": "pass"}
#: Height of the clip players and their posters, in CSS pixels.
PLAYER_HEIGHT = 144


def write_report(out_dir: str | Path, *, max_thumbnails: int = 300, max_plots: int = 100,
                 max_rows: int = 2000) -> Path:
    """Write ``OUT/report.html`` and return its path. The clip table lists the first ``max_rows``
    clips in table order (failing first, so no problem is hidden behind passing clips; the rest
    are counted and left to results.parquet: a page of 100,000 rows helps nobody and takes a
    minute to write). Thumbnails and player posters are cut for the first ``max_thumbnails``;
    identity plots for up to ``max_plots`` flagged clips."""
    out_dir = Path(out_dir)
    run = _read_json(out_dir / "run.json")
    results = _ordered(_read_results(out_dir))
    align_cfg = (run.get("config") or {}).get("align") or {}
    text = page(f"FixTalk run report: {out_dir.name}",
                f"FixTalk run report <small>{html.escape(str(out_dir))}</small>", [
                    summary_html(results, run, out_dir), _histograms(results),
                    _clip_table(results, out_dir, max_thumbnails, align_cfg, max_rows), _errors(results),
                    _identity_plots(results, out_dir, max_plots)])
    path = out_dir / "report.html"
    tmp = path.with_name(f".report.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- inputs
def _read_results(out_dir: Path) -> pd.DataFrame:
    path = out_dir / "results.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame({"clip_id": []})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _outcomes(df: pd.DataFrame) -> list[str]:
    status = df["status"] if "status" in df else pd.Series("ok", index=df.index)
    qc = df["qc_status"] if "qc_status" in df else pd.Series(None, index=df.index)
    return [outcome(s if isinstance(s, str) else "ok", q) for s, q in zip(status, qc)]


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Failed rows first, then QC fail, warn, pass; by clip id within each group."""
    if df.empty:
        return df
    rank = [_RANK[o] for o in _outcomes(df)]
    ids = df["clip_id"].astype(str) if "clip_id" in df else pd.Series("", index=df.index)
    return df.assign(_rank=rank, _id=ids).sort_values(["_rank", "_id"]).drop(
        columns=["_rank", "_id"]).reset_index(drop=True)


def _value(row: pd.Series, col: str) -> Any:
    value = row.get(col)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value


def _is_number(value: Any) -> bool:
    """A real number, numpy's included (``numpy.int64`` is no ``int``), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _local_file(value: Any, out_dir: Path, folder: str = "clips") -> Path | None:
    """The file a results path names, preferring the copy inside ``OUT`` (``OUT/<path>`` for a
    relative path, else ``OUT/<folder>/<file name>``) so links stay relative when the folder
    was moved; the path as written when only it exists."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value):
        return None
    path = Path(str(value))
    for candidate in ([out_dir / path] if not path.is_absolute() else []) + [
            out_dir / folder / path.name, path]:
        if candidate.is_file():
            return candidate
    return None


def _href(path: Path, out_dir: Path) -> str:
    """An attribute-safe relative URL of ``path`` from the page."""
    return html.escape(quote(Path(os.path.relpath(path, out_dir)).as_posix()))


# ----------------------------------------------------------------------------- sections
def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _histograms(df: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    imgs = []
    for col, label in (("csim_mean", "CSIM mean"), ("phone_corr", "phone correlation"),
                       ("lse_c", "SyncNet LSE-C")):
        if col not in df:
            continue
        values = pd.to_numeric(df[col], errors="coerce").dropna()
        if values.empty:
            continue
        fig = Figure(figsize=(3.6, 2.4), dpi=90)
        ax = fig.add_subplot(1, 1, 1)
        ax.hist(values, bins=min(30, max(5, len(values))), color="#2a6fdb")
        ax.set_title(f"{label} (n={len(values)})", fontsize=9)
        fig.tight_layout()
        imgs.append(f"<img alt='histogram of {col}' id='hist-{col}' src='{_png_data_uri(fig)}'>")
    body = "".join(imgs) or "<p>No QC metrics in the results.</p>"
    return f"<h2>Distributions</h2><div class='plots'>{body}</div>"


def _clip_table(df: pd.DataFrame, out_dir: Path, max_thumbnails: int,
                align_cfg: dict[str, Any], max_rows: int) -> str:
    rest = max(0, len(df) - max_rows)
    df = df.head(max_rows)
    cols = [c for c in COLUMNS if c[0] in df]
    head = ("<th data-col='clip_id'>clip</th><th>play</th><th>first / middle / last</th>"
            "<th data-col='status'>status</th><th data-col='qc_status'>qc</th>"
            "<th data-col='qc_reasons' class='reason'>what QC found / why it failed</th>"
            + "".join(f"<th data-col='{c}' title='{html.escape(help_)}'>{html.escape(h)}</th>"
                      for c, h, _, help_ in cols))
    body = []
    for i, ((_, row), result) in enumerate(zip(df.iterrows(), _outcomes(df))):
        clip_id = html.escape(str(_value(row, "clip_id") or ""))
        clip = _local_file(_value(row, "output_path"), out_dir)
        pictures = _pictures(clip) if clip is not None and i < max_thumbnails else {}
        status, qc = (html.escape(str(_value(row, c) or "")) for c in ("status", "qc_status"))
        cells = [_name_cell(row, clip, out_dir), _player_cell(row, clip, out_dir, pictures),
                 f"<td class='thumbs'>{_thumbs(row, pictures, out_dir)}</td>",
                 f"<td data-v='{status}' title='{html.escape(STATUS_HELP.get(status, ''))}'>"
                 f"{html.escape(STATUS_WORDS.get(status, status))}</td>",
                 f"<td data-v='{qc}'>{qc}</td>", _reason_cell(row, result)]
        for col, _, fmt, _ in cols:
            cells.append(_transcript_td(row, align_cfg) if col == "script_wer"
                         else _metric_td(_value(row, col), fmt))
        body.append(f"<tr class='{_ROW_CLASS.get(result, '')}' data-clip='{clip_id}' "
                    f"data-outcome='{result}'>{''.join(cells)}</tr>")
    more = (f"<p id='clips-not-listed'>{rest:,} more {'clip is' if rest == 1 else 'clips are'} not listed here (the table shows the "
            f"first {max_rows:,}, problems first); results.parquet has every clip.</p>" if rest else "")
    return (f"<h2>Clips</h2>{filter_bar()}<table id='clips'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{more}")


def _name_cell(row: pd.Series, clip: Path | None, out_dir: Path) -> str:
    name = html.escape(str(_value(row, "clip_id") or ""))
    link = f"<a href='{_href(clip, out_dir)}'>{name}</a>" if clip else name
    subs = _local_file(_value(row, "subtitles_srt"), out_dir)
    if subs:
        link += f" <a class='subs' href='{_href(subs, out_dir)}'>srt</a>"
    return f"<td data-v='{name}'>{link}</td>"


def _player_cell(row: pd.Series, clip: Path | None, out_dir: Path, pictures: dict[str, str]) -> str:
    """A ``<video>`` of the clip by its relative path: ``preload="none"`` (nothing is read until
    it plays), a poster cut from its middle frame, and its WebVTT subtitles as a track."""
    if clip is None:
        return "<td data-v=''></td>"
    width, height = _value(row, "width"), _value(row, "height")
    size = f" height='{PLAYER_HEIGHT}'"
    if _is_number(width) and _is_number(height) and height > 0:
        size += f" width='{round(PLAYER_HEIGHT * width / height)}'"
    poster = f" poster='{pictures['poster']}'" if pictures.get("poster") else ""
    vtt = _local_file(_value(row, "subtitles_vtt"), out_dir)
    track = (f"<track kind='subtitles' label='subtitles' src='{_href(vtt, out_dir)}'>"
             if vtt else "")
    return (f"<td data-v=''><video controls preload='none'{size}{poster} "
            f"src='{_href(clip, out_dir)}'>{track}</video></td>")


def _reason_cell(row: pd.Series, result: str) -> str:
    """QC reasons as sentences (the original text as each one's tooltip); a failed row's error."""
    if result == "failed":
        stage = _value(row, "error_stage")
        where = f"Failed at {STAGES.get(stage, stage)}: " if stage else ""
        text = html.escape(f"{where}{_value(row, 'error_message') or 'no message'}")
        return f"<td class='reason' data-v='{text}'>{text}</td>"
    raw = str(_value(row, "qc_reasons") or "")
    items = "".join(f"<li title='{html.escape(r.raw)}'><span class='lvl {r.level}'>{r.level}</span>"
                    f"{html.escape(r.sentence)}</li>" for r in reason_sentences(raw))
    if not items:
        items = "<li class='quiet'>" + {"ok": "All checks passed.", "unchecked": "Not checked "
                                        "by QC."}.get(result, "") + "</li>"
    return f"<td class='reason' data-v='{html.escape(raw)}'><ul>{items}</ul></td>"


def _metric_td(value: Any, fmt: str | None) -> str:
    if _is_number(value) and fmt:
        return f"<td class='num' data-v='{float(value)!r}'>{value:{fmt}}</td>"
    text = html.escape("" if value is None else str(value))
    return f"<td data-v='{text}'>{text}</td>"


def _transcript_td(row: pd.Series, align_cfg: dict[str, Any]) -> str:
    cell = transcript_cell(row.to_dict(), align_cfg)
    sort = "" if cell.sort_value is None else repr(cell.sort_value)
    css = "num" if cell.sort_value is not None else ("unchecked" if cell.text else "")
    return (f"<td class='{css}' data-v='{sort}' title='{html.escape(cell.tooltip)}'>"
            f"{html.escape(cell.text)}</td>")


def _thumbs(row: pd.Series, pictures: dict[str, str], out_dir: Path) -> str:
    if not pictures:
        return ""
    imgs = "".join(f"<img alt='frame {k}' src='{pictures[k]}'>" for k in ("first", "middle", "last")
                   if k in pictures)
    pair = _local_file(_value(row, "dub_thumbnail"), out_dir, "qc")
    if pair:
        data = base64.b64encode(pair.read_bytes()).decode()
        imgs += (f"<br><img class='pair' alt='footage / dub' title='footage (left), dub (right)' "
                 f"src='data:image/jpeg;base64,{data}'>")
    return imgs


def _pictures(clip: Path, thumb_height: int = 72) -> dict[str, str]:
    """JPEG data URIs cut from the clip: ``first`` / ``middle`` / ``last`` frame thumbnails and
    the player's ``poster`` (the middle frame, :data:`PLAYER_HEIGHT` high); those that could not
    be decoded are missing."""
    try:
        duration = media_duration(probe(clip), "video")
    except ValueError:
        return {}
    middle = duration / 2
    cuts = {"first": (0.0, thumb_height), "middle": (middle, thumb_height),
            "last": (max(0.0, duration - 0.08), thumb_height), "poster": (middle, PLAYER_HEIGHT)}
    ffmpeg, _ = require_ffmpeg()
    out = {}
    for name, (t, height) in cuts.items():
        argv = [ffmpeg, "-nostdin", "-v", "error", "-ss", f"{t:.3f}", *input_args(clip),
                "-frames:v", "1", "-vf", f"scale=-2:{height}", "-q:v", "6",
                "-f", "image2pipe", "-c:v", "mjpeg", "pipe:1"]
        proc = subprocess.run(argv, capture_output=True, check=False)
        if proc.returncode == 0 and proc.stdout:
            out[name] = "data:image/jpeg;base64," + base64.b64encode(proc.stdout).decode()
    return out


def _errors(df: pd.DataFrame) -> str:
    if "status" not in df:
        return ""
    failed = df[df["status"] == "failed"]
    if failed.empty:
        return "<h2>Errors</h2><p>No failed clips.</p>"
    items = []
    for _, row in failed.iterrows():
        stage, kind = _value(row, "error_stage"), _value(row, "error_type")
        where = " / ".join(str(x) for x in (STAGES.get(stage, stage) if stage else None, kind) if x)
        clip_id = html.escape(str(_value(row, "clip_id")))
        items.append(f"<li data-clip='{clip_id}'><b>{clip_id}</b> ({html.escape(where)}): "
                     f"{html.escape(str(_value(row, 'error_message') or ''))}</li>")
    return f"<h2>Errors ({len(failed)})</h2><ul id='errors'>{''.join(items)}</ul>"


def _identity_plots(df: pd.DataFrame, out_dir: Path, max_plots: int) -> str:
    imgs: list[str] = []
    if "qc_status" not in df:
        return ""
    for _, row in df[df["qc_status"].isin(["warn", "fail"])].iterrows():
        if len(imgs) >= max_plots:
            break
        clip_id = str(_value(row, "clip_id"))
        plot = _local_file(_value(row, "qc_plot"), out_dir, "qc") or _local_file(
            f"qc/{clip_id}_identity.png", out_dir, "qc")
        if plot:
            data = base64.b64encode(plot.read_bytes()).decode()
            imgs.append(f"<img alt='identity curve {html.escape(clip_id)}' "
                        f"src='data:image/png;base64,{data}'>")
    if not imgs:
        return ""
    return f"<h2>Identity curves of flagged clips</h2><div class='plots'>{''.join(imgs)}</div>"
