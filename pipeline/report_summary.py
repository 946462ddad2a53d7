"""The run summary at the top of ``report.html``, in sentences a producer reads.

How many clips and how they came out (ok / with warnings / failed), how long the run and each
clip took, which model made them, when, where the outputs are, and what failed and why. It is
worded from ``results.parquet`` (every clip) and ``run.json`` (the run); the raw record stays in
``run.json``, which the summary links to, and never appears in the page.
"""
from __future__ import annotations

import html
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import quote

import pandas as pd

from pipeline.report_words import (
    STAGES,
    duration_words,
    finite_number,
    full_stop,
    plural,
    reason_area,
    reason_sentences,
)
from stages.transcript.script_text import wer_trusted

#: Row statuses of a delivered clip (rendered in this run, or kept from an earlier one).
DELIVERED = ("ok", "skipped")
_MAX_IDS = 5


def outcome(status: Any, qc_status: Any) -> str:
    """One clip's outcome: ``ok`` (delivered, QC passed), ``warn``, ``qc_fail`` (delivered but
    failed QC), ``failed`` (no clip), ``pending`` (not rendered yet), ``unchecked`` (no QC)."""
    if status == "failed":
        return "failed"
    if status not in DELIVERED:
        return "pending"
    return {"pass": "ok", "warn": "warn", "fail": "qc_fail"}.get(qc_status, "unchecked")


def summary_html(df: pd.DataFrame, run: dict[str, Any], out_dir: Path) -> str:
    """``<h2>Summary</h2>`` and its paragraphs for the results ``df`` and the ``run`` record."""
    rows = df.to_dict("records")
    outcomes = [outcome(r.get("status"), r.get("qc_status")) for r in rows]
    facts = [_rendered(rows, run), _timing(rows, run), _model(rows, run),
             _recogniser(rows, run), _outputs(run, out_dir)]
    items = "".join(f"<li>{f}</li>" for f in facts if f)
    problems = _problems(rows, outcomes, run)
    body = (f"<h2>Summary</h2><p class='lead' id='summary-sentence'>"
            f"{html.escape(lead_sentence(outcomes))}</p><ul class='facts' id='summary-facts'>"
            f"{items}</ul>")
    if problems:
        title = ("What failed and why" if {"failed", "qc_fail"} & set(outcomes) or run.get("error")
                 else "What to check")
        body += (f"<h3>{title}</h3><ul class='problems' id='summary-problems'>"
                 + "".join(f"<li>{p}</li>" for p in problems) + "</ul>")
    return body


def lead_sentence(outcomes: list[str]) -> str:
    """``5 clips: 3 ok, 1 with warnings, 1 failed (1 could not be rendered).``"""
    if not outcomes:
        return "No clips in this run: the results table is empty."
    n = Counter(outcomes)
    failed = n["failed"] + n["qc_fail"]
    parts = [f"{n['ok']} ok", f"{n['warn']} with warnings", f"{failed} failed"]
    if failed:
        why = [f"{n['failed']} could not be rendered" if n["failed"] else "",
               f"{n['qc_fail']} rendered but failed quality control" if n["qc_fail"] else ""]
        parts[-1] += f" ({', '.join(w for w in why if w)})"
    if n["pending"]:
        parts.append(f"{n['pending']} not rendered yet")
    if n["unchecked"]:
        parts.append(f"{n['unchecked']} delivered without quality control")
    return f"{plural(len(outcomes), 'clip')}: {', '.join(parts)}."


# --------------------------------------------------------------------------- facts
def _rendered(rows: list[dict], run: dict[str, Any]) -> str:
    """How many clips this run made and how many it kept from earlier runs (``status`` ok /
    skipped; ``run.json``'s ``rendered_this_run`` also counts the rows that failed)."""
    made = sum(r.get("status") == "ok" for r in rows)
    kept = sum(r.get("status") == "skipped" for r in rows)
    if isinstance(run.get("rendered_this_run"), int):
        made = min(made, run["rendered_this_run"])
    text = f"{plural(made, 'clip')} rendered in this run"
    if kept:
        text += f"; {plural(kept, 'clip')} already done in an earlier run and kept"
    return html.escape(text + ".")


def _timing(rows: list[dict], run: dict[str, Any]) -> str:
    text = []
    wall = run.get("wall_time_s")
    if finite_number(wall) is not None:
        text.append(f"The run took {duration_words(float(wall))}{_when(run)}.")
    per_clip = [(r, _clip_seconds(r)) for r in rows if r.get("status") in DELIVERED]
    per_clip = [(r, s) for r, s in per_clip if s > 0]
    if per_clip:
        seconds = [s for _, s in per_clip]
        slowest, top = max(per_clip, key=lambda p: p[1])
        stage = max((c for c in slowest if c.startswith("t_") and _num(slowest[c])),
                    key=lambda c: _num(slowest[c]))
        most = f"most of it {STAGES.get(stage[2:], stage[2:])} ({duration_words(_num(slowest[stage]))})"
        if len(seconds) == 1:
            text.append(f"The clip took {duration_words(top)} of processing, {most}.")
        else:
            text.append(f"A clip took {duration_words(median(seconds))} of processing (median of "
                        f"{len(seconds)} delivered clips); the longest, {slowest.get('clip_id')}, "
                        f"{duration_words(top)}, {most}.")
    return html.escape(" ".join(text))


def _when(run: dict[str, Any]) -> str:
    try:
        start, end = (datetime.fromisoformat(str(run[k])) for k in ("started", "finished"))
    except (KeyError, ValueError):
        return ""
    if start.tzinfo and end.tzinfo:  # run.py writes UTC; say UTC whatever the offset written
        start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    day = f"{start.day} {start:%b %Y}"
    if start.date() == end.date():
        return f", on {day} from {start:%H:%M} to {end:%H:%M} UTC"
    return f", from {day} {start:%H:%M} to {end.day} {end:%b %Y} {end:%H:%M} UTC"


def _model(rows: list[dict], run: dict[str, Any]) -> str:
    model = (run.get("config") or {}).get("model") or {}
    ckpt_id = run.get("checkpoint_id") or _first(rows, "checkpoint_id")
    if not ckpt_id and not model:
        return ""
    path = model.get("checkpoint")
    text = (f"Model: checkpoint {Path(str(path)).name}" if path else
            "Model: the shipped default model (demo quality, see docs/model_card.md)")
    if ckpt_id:
        text += f", id {ckpt_id}"
    delivered = [r for r in rows if r.get("status") in DELIVERED]
    fitted = sum(_str(r.get("adapted_checkpoint")) for r in delivered)
    if fitted:
        text += f"; fitted to the presenter before rendering for {fitted} of {len(delivered)} clips"
    devices = Counter(str(r["render_device"]).upper() for r in delivered if _str(r.get("render_device")))
    if devices:
        text += "; rendered on " + " and ".join(devices)
    return html.escape(text + ".")


def _recogniser(rows: list[dict], run: dict[str, Any]) -> str:
    backends = Counter(str(r["align_backend"]) for r in rows if _str(r.get("align_backend")))
    if not backends:
        return ""
    in_flag = bool(((run.get("config") or {}).get("align") or {}).get("pocketsphinx_wer_in_flag"))
    trusted = [b for b in sorted(backends) if wer_trusted(b, in_flag)]
    untrusted = [b for b in sorted(backends) if b not in trusted]
    named = " and ".join(f"{b} ({plural(n, 'clip')})" for b, n in sorted(backends.items()))
    text = (f"Script check: {named} aligned each script to its speech (the subtitles' timings "
            "and the check that the audio says the script).")
    if trusted:
        text += f" The table shows the word error rate of {' and '.join(trusted)}'s transcripts."
    if untrusted:
        text += (f" {' and '.join(untrusted)}'s word-by-word transcript is not reliable on "
                 "synthetic voices, so its clips show the transcript check as “not checked” "
                 "(hover for why).")
    return html.escape(text)


def _outputs(run: dict[str, Any], out_dir: Path) -> str:
    links = []
    for name, what in (("clips", "the clips (MP4, with .srt/.vtt subtitles beside each)"),
                       ("results.parquet", "every clip's figures"),
                       ("run.json", "the full run record (settings, software versions, stage "
                                    "timings)")):
        target = out_dir / name
        if target.exists():
            href = quote(name + ("/" if target.is_dir() else ""))
            links.append(f"<a href='{href}'>{html.escape(name)}</a>: {html.escape(what)}")
    text = "Outputs, beside this page: " + "; ".join(links) + "." if links else ""
    if run.get("manifest"):
        text += f" Manifest: {html.escape(str(run['manifest']))}."
    return text


# --------------------------------------------------------------------------- problems
def _problems(rows: list[dict], outcomes: list[str], run: dict[str, Any]) -> list[str]:
    """Sentences (HTML-escaped): clips that could not be rendered, grouped by the step and error
    type; clips that failed QC or have warnings, grouped by what was flagged; a stopped run."""
    return [html.escape(p) for p in (
        *_render_failures([r for r, o in zip(rows, outcomes) if o == "failed"]),
        _flagged([r for r, o in zip(rows, outcomes) if o == "qc_fail"], "fail"),
        _flagged([r for r, o in zip(rows, outcomes) if o == "warn"], "warn"),
        _stopped(run, outcomes.count("pending"))) if p]


def _render_failures(failed: list[dict]) -> list[str]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in failed:
        groups[(r.get("error_stage"), r.get("error_type"))].append(r)
    out = []
    for (stage, _), group in sorted(groups.items(), key=lambda g: -len(g[1])):
        several = len({str(r.get("error_message") or "") for r in group}) > 1
        why = full_stop(str(group[0].get("error_message") or "no message"))
        out.append(f"{plural(len(group), 'clip')} could not be rendered: "
                   f"{'it' if len(group) == 1 else 'they'} failed at "
                   f"{STAGES.get(stage, stage or 'an unknown step')} ({_ids(group)}). "
                   f"Why: {'for example, ' if several else ''}{why}")
    return out


def _flagged(rows: list[dict], level: str) -> str:
    """``2 clips have warnings: likeness in 2 clips (a, b); sound level in b.`` For clips that
    failed QC, only the failing checks are named."""
    if not rows:
        return ""
    areas: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        reasons = [x for x in reason_sentences(r.get("qc_reasons")) if level == "warn" or x.level == "fail"]
        for area in dict.fromkeys(reason_area(x) for x in reasons):
            areas[area].append(str(r.get("clip_id")))
    what = "; ".join(f"{area.lower()} in {_clips(ids)}"
                     for area, ids in sorted(areas.items(), key=lambda a: -len(a[1])))
    verb = {"fail": "failed quality control", "warn": "have warnings" if len(rows) > 1 else
            "has warnings"}[level]
    return (f"{plural(len(rows), 'clip')} {verb}: {what or 'see the table'}. "
            "The table below says why, clip by clip.")


def _stopped(run: dict[str, Any], pending: int) -> str:
    if not run.get("error"):
        return ""
    left = f"{plural(pending, 'clip')} {'was' if pending == 1 else 'were'} not rendered; " \
        if pending else ""
    return (f"The run stopped early because of a fault that is not about one clip: "
            f"{run['error']}. {left}fix the fault and run the same command again: finished clips "
            "are kept.")


def _ids(group: list[dict]) -> str:
    return _ids_list([str(r.get("clip_id")) for r in group])


def _clips(ids: list[str]) -> str:
    """``b`` or ``7 clips (c0, c1, c2, c3, c4 and 2 more)``."""
    return ids[0] if len(ids) == 1 else f"{len(ids)} clips ({_ids_list(ids)})"


def _ids_list(ids: list[str]) -> str:
    shown = ", ".join(ids[:_MAX_IDS])
    return shown + (f" and {len(ids) - _MAX_IDS} more" if len(ids) > _MAX_IDS else "")


# --------------------------------------------------------------------------- values
def _num(value: Any) -> float:
    """A finite number as a float (numpy's included), else 0."""
    return finite_number(value) or 0.0


def _str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _clip_seconds(row: dict) -> float:
    return sum(_num(v) for k, v in row.items() if k.startswith("t_"))


def _first(rows: list[dict], key: str) -> Any:
    return next((r[key] for r in rows if _str(r.get(key))), None)
