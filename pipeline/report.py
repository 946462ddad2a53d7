"""``OUT/report.html``: one self-contained page to audit a run.

The page needs no network: CSS and JS are inline, pictures are ``data:`` URIs (histograms as PNG
from matplotlib, frame thumbnails as small JPEGs cut by ffmpeg), and clips are linked by paths
relative to ``OUT`` (with their SRT subtitles). It holds the run summary (``run.json`` + counts
from ``results.parquet``), histograms of CSIM and sync, the table of clips (failed and QC-failing
first, sortable by clicking a header, or on load with ``report.html#sort=COLUMN`` /
``#sort=-COLUMN``), the error of every failed row and the identity curves of flagged clips.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from stages.media.av import input_args, media_duration, probe, require_ffmpeg

#: Table columns (shown when present): (column, header, number format).
COLUMNS = [
    ("status", "status", None), ("qc_status", "qc", None), ("csim_mean", "CSIM mean", ".3f"),
    ("csim_min", "CSIM min", ".3f"), ("csim_slope", "CSIM /s", "+.4f"),
    ("face_presence", "face", ".2f"), ("sync_corr", "sync r", ".2f"),
    ("sync_lag_frames", "lag", ".0f"), ("lse_c", "LSE-C", ".2f"), ("lse_d", "LSE-D", ".2f"),
    ("duration_diff_s", "dur diff s", "+.3f"), ("lufs", "LUFS", ".1f"),
    ("script_wer", "script WER", ".2f"), ("script_aligned_share", "script aligned", ".2f"),
    ("dubbed_fraction", "dubbed", ".2f"), ("outside_psnr_min", "outside dB", ".1f"),
]
_RANK = {"failed": 0, "fail": 1, "warn": 2, "pass": 3}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none;position:sticky;top:0}
th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fde8e8}tr.fail td{background:#fff0e0}tr.warn td{background:#fffbe0}
.thumbs img{height:56px;margin-right:2px}.thumbs img.pair{height:96px}.reason{max-width:420px;font-size:12px}
.summary td:first-child{font-weight:600}.plots img{margin:4px;border:1px solid #ddd}
"""

_JS = """
function sortTable(th, desc){
  var table=th.closest('table'), body=table.tBodies[0], idx=Array.prototype.indexOf.call(th.parentNode.children, th);
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){
    var x=a.cells[idx].getAttribute('data-v'), y=b.cells[idx].getAttribute('data-v');
    var nx=parseFloat(x), ny=parseFloat(y), r;
    if(!isNaN(nx)&&!isNaN(ny)) r=nx-ny; else if(isNaN(nx)!==isNaN(ny)) return isNaN(nx)?1:-1;
    else r=String(x).localeCompare(String(y));
    return desc?-r:r;});
  rows.forEach(function(r){body.appendChild(r);});
  Array.prototype.forEach.call(th.parentNode.children,function(h){h.classList.remove('asc','desc');});
  th.classList.add(desc?'desc':'asc');
}
document.addEventListener('DOMContentLoaded',function(){
  document.querySelectorAll('#clips th[data-col]').forEach(function(th){
    th.addEventListener('click',function(){sortTable(th, th.classList.contains('asc'));});});
  var m=/sort=(-?)([A-Za-z0-9_]+)/.exec(location.hash);
  if(m){var th=document.querySelector('#clips th[data-col="'+m[2]+'"]'); if(th) sortTable(th, m[1]==='-');}
});
"""


def write_report(out_dir: str | Path, *, max_thumbnails: int = 300, max_plots: int = 100) -> Path:
    """Write ``OUT/report.html`` and return its path. Thumbnails are cut for the first
    ``max_thumbnails`` clips in table order (failing first); identity plots for up to
    ``max_plots`` flagged clips."""
    out_dir = Path(out_dir)
    results = _read_results(out_dir)
    run = _read_json(out_dir / "run.json")
    results = _ordered(results)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; media-src 'self'\">",
        f"<title>FixTalk run report: {html.escape(out_dir.name)}</title>",
        f"<style>{_CSS}</style><script>{_JS}</script></head><body>",
        f"<h1>FixTalk run report <small>{html.escape(str(out_dir))}</small></h1>",
        _summary(results, run), _histograms(results),
        _clip_table(results, out_dir, max_thumbnails), _errors(results),
        _identity_plots(results, out_dir, max_plots), "</body></html>",
    ]
    path = out_dir / "report.html"
    tmp = path.with_name(f".report.{os.getpid()}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- inputs
def _read_results(out_dir: Path) -> pd.DataFrame:
    path = out_dir / "results.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame({"clip_id": []})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {"run.json": "unreadable"}


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Failed rows first, then QC fail, warn, pass; by clip id within each group."""
    if df.empty:
        return df
    status = df.get("status", pd.Series("ok", index=df.index)).fillna("ok")
    qc = df.get("qc_status", pd.Series("", index=df.index)).fillna("")
    rank = [(_RANK["failed"] if s == "failed" else _RANK.get(q, 4)) for s, q in zip(status, qc)]
    ids = df["clip_id"].astype(str) if "clip_id" in df else pd.Series("", index=df.index)
    return df.assign(_rank=rank, _id=ids).sort_values(["_rank", "_id"]).drop(
        columns=["_rank", "_id"]).reset_index(drop=True)


def _value(row: pd.Series, col: str) -> Any:
    value = row.get(col)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value


# ----------------------------------------------------------------------------- sections
def _summary(df: pd.DataFrame, run: dict[str, Any]) -> str:
    rows = [("clips", str(len(df)))]
    for col in ("status", "qc_status"):
        if col in df and len(df):
            counts = df[col].fillna("none").value_counts().sort_index()
            rows.append((col, ", ".join(f"{k}: {v}" for k, v in counts.items())))
    for key, value in run.items():
        shown = value if isinstance(value, (str, int, float, bool)) or value is None else \
            json.dumps(value, sort_keys=True, default=str)
        rows.append((str(key), str(shown)[:600]))
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<h2>Run summary</h2><table class='summary'>{cells}</table>"


def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _histograms(df: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    imgs = []
    for col, label in (("csim_mean", "CSIM mean"), ("sync_corr", "sync correlation"),
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


def _clip_table(df: pd.DataFrame, out_dir: Path, max_thumbnails: int) -> str:
    cols = [c for c in COLUMNS if c[0] in df]
    head = "<th data-col='clip_id'>clip</th>" + "".join(
        f"<th data-col='{c}'>{html.escape(h)}</th>" for c, h, _ in cols)
    head += "<th data-col='qc_reasons'>reasons / error</th><th>first / middle / last</th>"
    body = []
    for i, row in df.iterrows():
        clip_id = str(_value(row, "clip_id") or "")
        status = str(_value(row, "status") or "ok")
        qc = str(_value(row, "qc_status") or "")
        css = "failed" if status == "failed" else qc
        clip = _clip_path(row, out_dir)
        name = html.escape(clip_id)
        link = (f"<a href='{html.escape(quote(os.path.relpath(clip, out_dir)))}'>{name}</a>"
                if clip else name)
        subs = _value(row, "subtitles_srt")
        if subs and Path(str(subs)).is_file():
            href = html.escape(quote(os.path.relpath(str(subs), out_dir)))
            link += f" <a class='subs' href='{href}'>srt</a>"
        cells = [f"<td data-v='{name}'>{link}</td>"]
        for col, _, fmt in cols:
            value = _value(row, col)
            if isinstance(value, (int, float)) and fmt:
                cells.append(f"<td class='num' data-v='{float(value)!r}'>{value:{fmt}}</td>")
            else:
                text = html.escape("" if value is None else str(value))
                cells.append(f"<td data-v='{text}'>{text}</td>")
        reason = _value(row, "error_message") if status == "failed" else _value(row, "qc_reasons")
        reason = html.escape(str(reason or ""))
        cells.append(f"<td class='reason' data-v='{reason}'>{reason}</td>")
        thumbs = _thumbnails(clip) if clip and i < max_thumbnails else []
        imgs = "".join(f"<img alt='frame {k}' src='{src}'>" for k, src in zip(
            ("first", "middle", "last"), thumbs))
        pair = _value(row, "dub_thumbnail")
        if pair and Path(str(pair)).is_file() and i < max_thumbnails:
            data = base64.b64encode(Path(str(pair)).read_bytes()).decode()
            imgs += (f"<br><img class='pair' alt='footage / dub' title='footage (left), dub (right)' "
                     f"src='data:image/jpeg;base64,{data}'>")
        cells.append(f"<td class='thumbs'>{imgs}</td>")
        body.append(f"<tr class='{css}' data-clip='{name}'>{''.join(cells)}</tr>")
    return (f"<h2>Clips</h2><table id='clips'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _clip_path(row: pd.Series, out_dir: Path) -> Path | None:
    path = _value(row, "output_path")
    if not path:
        return None
    path = Path(str(path))
    if not path.is_absolute():
        path = out_dir / path
    return path if path.is_file() else None


def _thumbnails(clip: Path, height: int = 72) -> list[str]:
    """JPEG data URIs of the first, middle and last frame (empty on any decoding problem)."""
    try:
        duration = media_duration(probe(clip), "video")
    except ValueError:
        return []
    ffmpeg, _ = require_ffmpeg()
    out = []
    for t in (0.0, duration / 2, max(0.0, duration - 0.08)):
        argv = [ffmpeg, "-nostdin", "-v", "error", "-ss", f"{t:.3f}", *input_args(clip),
                "-frames:v", "1", "-vf", f"scale=-2:{height}", "-q:v", "6",
                "-f", "image2pipe", "-c:v", "mjpeg", "pipe:1"]
        proc = subprocess.run(argv, capture_output=True, check=False)
        if proc.returncode == 0 and proc.stdout:
            out.append("data:image/jpeg;base64," + base64.b64encode(proc.stdout).decode())
    return out


def _errors(df: pd.DataFrame) -> str:
    if "status" not in df:
        return ""
    failed = df[df["status"] == "failed"]
    if failed.empty:
        return "<h2>Errors</h2><p>No failed clips.</p>"
    items = []
    for _, row in failed.iterrows():
        where = " / ".join(str(_value(row, c)) for c in ("error_stage", "error_type")
                           if _value(row, c))
        items.append(f"<li data-clip='{html.escape(str(_value(row, 'clip_id')))}'><b>"
                     f"{html.escape(str(_value(row, 'clip_id')))}</b> ({html.escape(where)}): "
                     f"{html.escape(str(_value(row, 'error_message') or ''))}</li>")
    return f"<h2>Errors ({len(failed)})</h2><ul id='errors'>{''.join(items)}</ul>"


def _identity_plots(df: pd.DataFrame, out_dir: Path, max_plots: int) -> str:
    imgs = []
    for _, row in df.iterrows():
        if len(imgs) >= max_plots or _value(row, "qc_status") not in ("warn", "fail"):
            continue
        clip_id = str(_value(row, "clip_id"))
        plot = _value(row, "qc_plot") or out_dir / "qc" / f"{clip_id}_identity.png"
        plot = Path(str(plot))
        if plot.is_file():
            data = base64.b64encode(plot.read_bytes()).decode()
            imgs.append(f"<img alt='identity curve {html.escape(clip_id)}' "
                        f"src='data:image/png;base64,{data}'>")
    if not imgs:
        return ""
    return f"<h2>Identity curves of flagged clips</h2><div class='plots'>{''.join(imgs)}</div>"
