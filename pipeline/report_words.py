"""Plain words for ``report.html``: QC reasons as sentences, the transcript check, durations.

QC (``stages.checks.rules``) writes reasons for engineers and for ``fixtalk audit`` filters, such as
``identity: csim_mean 0.842 < 0.910 [dlib-resnet128] (fail)``. The report shows each one as a
sentence a producer can act on (``The face looks less like the portrait than it should (likeness
0.842, expected at least 0.910).``) and keeps the original text as its tooltip. A reason this
module does not know is shown as written, its area in words and metric names without
underscores, so new QC checks never disappear from the page.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

from stages.transcript.script_text import wer_trusted

#: QC areas (the text before the first ``:``) in words.
AREAS = {
    "identity": "Likeness", "identity drift": "Likeness", "face": "Face", "sync": "Lip sync",
    "lip jitter": "Lip sync", "syncnet": "Lip sync (SyncNet)", "duration": "Length",
    "delivery": "File", "format": "Format", "loudness": "Sound level", "script": "Script",
    "subtitles": "Subtitles", "dub": "Dub",
}

#: Metric -> (what it means when its check trips, the figure's name). Where QC writes its own
#: explanation in brackets after a comparison (``sync: mouth_motion 0.003 < 0.005 (the mouth does
#: not move)``), that explanation leads the sentence instead, unless the metric is in
#: :data:`OWN_WORDS` (whose notes say no more than the phrase here).
METRICS = {
    "csim_mean": ("The face looks less like the portrait than it should", "likeness"),
    "csim_min": ("In some frames the face looks less like the portrait", "lowest likeness"),
    "face_presence": ("The face is not found in every frame", "share of frames with the face"),
    "mouth_motion": ("The mouth hardly moves", "mouth movement"),
    "mouth_motion_speech": ("The mouth hardly moves while the speech plays",
                            "mouth movement in speech"),
    "mouth_motion_pause": ("The mouth moves through the pauses in the speech",
                           "mouth movement in pauses"),
    "phone_corr": ("The mouth does not follow the speech sounds", "agreement with the phones"),
    "bilabial_closure": ("The lips do not close on P, B and M", "lip gap on P/B/M"),
    "sync_corr": ("The mouth follows the speech only loosely", "sync score"),
    "sync_lag_frames": ("The mouth seems out of step with the speech", "offset in frames"),
    "lse_c": ("SyncNet is not confident that the lips match the speech", "SyncNet confidence"),
    "av_offset": ("SyncNet finds the picture out of step with the sound", "offset in frames"),
    "duration_diff_s": ("The video is not as long as the speech", "difference in seconds"),
    "true_peak_db": ("The sound peaks too close to full scale (it may distort)", "true peak dBTP"),
    "script_wer": ("The words heard differ from the script", "word error rate"),
    "dubbed_fraction": ("Part of the footage could not be dubbed (face lost, too small or "
                        "turned away)", "dubbed share"),
    "outside_psnr_min": ("The picture outside the mouth changed", "match outside the mouth, dB"),
    "mouth_motion_ratio": ("The dubbed mouth moves much less than the presenter's own",
                           "share of the footage's mouth movement"),
}
#: Metrics whose QC note repeats the phrase in :data:`METRICS`: the phrase is used.
OWN_WORDS = {"dubbed_fraction", "outside_psnr_min"}

#: Delivery format keys in words.
FORMAT_KEYS = {"vcodec": "video codec", "pix_fmt": "pixel format", "acodec": "audio codec",
               "sample_rate": "audio sample rate", "fps": "frame rate"}

#: Pipeline stages in words (error_stage of failed rows, stage timings).
STAGES = {
    "manifest": "the manifest check", "speech": "speech synthesis", "ingest": "reading the inputs",
    "align": "script alignment", "face_crop": "the face crop", "adapt": "fitting the model",
    "motion": "motion", "render": "rendering", "mux": "muxing (sound, subtitles, signing)",
    "qc": "quality control",
}

#: A row's ``status`` in words, and what it means.
STATUS_WORDS = {"ok": "rendered", "skipped": "done earlier", "failed": "failed",
                "pending": "not rendered yet"}
STATUS_HELP = {
    "ok": "rendered in this run", "failed": "no clip: see why in the next columns",
    "skipped": "rendered by an earlier run with the same inputs and settings, and kept",
    "pending": "the run stopped, or this clip was outside --only / --limit / --shard"}

_LEVEL = re.compile(r"^(?P<text>.*) \((?P<level>warn|fail)\)$", re.S)
_COMPARE = re.compile(r"^(?P<area>[a-z ]+): (?P<key>\|?\w+\|?) (?P<value>[-+.\deE]+) "
                      r"(?P<op>[<>]) (?P<limit>[-+.\deE]+)(?P<note>.*)$", re.S)
_DRIFT = re.compile(r"^identity drift: csim_slope (?P<slope>[-+.\d]+)/s")
_FORMAT = re.compile(r"^format: (?P<key>\w+) (?P<value>\S+) \(expected (?P<want>[^)]+)\)$")
_LOUDNESS = re.compile(r"^loudness: (?P<value>[-+.\d]+) LUFS \(target (?P<target>[-+.\d]+) "
                       r"\+-(?P<tol>[.\d]+)\)$")
_SNAKE = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")


@dataclass(frozen=True)
class Reason:
    """One QC reason: ``level`` (warn | fail), the sentence shown, the original text."""

    level: str
    sentence: str
    raw: str


def reason_sentences(qc_reasons: str | None) -> list[Reason]:
    """The ``;``-separated ``qc_reasons`` of one clip as sentences, in their order."""
    out = []
    for raw in (qc_reasons or "").split(";"):
        raw = raw.strip()
        if not raw:
            continue
        m = _LEVEL.match(raw)
        text, level = (m["text"], m["level"]) if m else (raw, "warn")
        out.append(Reason(level, _sentence(text), raw))
    return out


def reason_area(reason: Reason) -> str:
    """The area of a reason in words (``Likeness``, ``Sound level``...), for the summary."""
    area = reason.raw.split(":", 1)[0].strip() if ":" in reason.raw else ""
    return AREAS.get(area, capital(humanise(area)) or "Other")


def _sentence(text: str) -> str:
    m = _COMPARE.match(text)
    if m and m["key"].strip("|") in METRICS:
        key = m["key"].strip("|")
        meaning, name = METRICS[key]
        note = re.sub(r"^\s*\[[^\]]*\]", "", m["note"]).strip()  # the embedder's [name]
        if note.startswith("(") and note.endswith(")") and key not in OWN_WORDS:
            meaning = capital(humanise(note[1:-1]).replace("+-", "±"))
        bound = "at least" if m["op"] == "<" else "at most"
        return f"{meaning} ({name} {m['value']}, expected {bound} {m['limit']})."
    if m := _DRIFT.match(text):
        return (f"The likeness fades during the clip (it falls by {abs(float(m['slope'])):.4f} "
                "per second).")
    if m := _FORMAT.match(text):
        name = FORMAT_KEYS.get(m["key"], humanise(m["key"]))
        return f"The file's {name} is {m['value']}, expected {m['want']}."
    if m := _LOUDNESS.match(text):
        return (f"The sound level is {m['value']} LUFS; the target is {m['target']} "
                f"± {m['tol']} LUFS.")
    area, _, rest = text.partition(": ")
    if not rest:
        return full_stop(capital(humanise(text)))
    rest = rest.replace("+-", "±")
    return full_stop(f"{AREAS.get(area, capital(area))}: {humanise(rest)}")


def humanise(text: str) -> str:
    """Metric names in a text as words: a known metric by its name, others without underscores."""
    def word(m: re.Match) -> str:
        key = m.group(0)
        return METRICS[key][1] if key in METRICS else key.replace("_", " ")
    return _SNAKE.sub(word, text)


def capital(text: str) -> str:
    """The text with its first letter upper-case, the rest as written (``P/B/M`` stays)."""
    return text[:1].upper() + text[1:]


def full_stop(text: str) -> str:
    """The text ending in a full stop (or the ``!`` / ``?`` it has)."""
    return text if text.endswith((".", "!", "?")) else text + "."


# --------------------------------------------------------------------------- transcript check
@dataclass(frozen=True)
class TranscriptCell:
    """What the report shows for a clip's script WER: ``text``, a sort value (None: not
    comparable) and a tooltip saying where the figure comes from or why there is none."""

    text: str
    sort_value: float | None
    tooltip: str


def transcript_cell(row: dict[str, Any], align_cfg: dict[str, Any]) -> TranscriptCell:
    """The script WER of one row, shown only where it is trusted (:func:`wer_trusted`, the rule
    QC judges by); ``align_cfg`` is the run's ``align`` config section (from ``run.json``)."""
    wer, share = finite_number(row.get("script_wer")), finite_number(row.get("script_aligned_share"))
    backend = row.get("align_backend") or None
    if wer is None and share is None:
        return TranscriptCell("", None, "no script: nothing to check")
    enough = share is not None and share >= float(align_cfg.get("min_aligned_share", 0.5))
    aligned = "" if share is None else (
        f" Forced alignment placed {share:.0%} of the script's words "
        f"({'the audio says the script' if enough else 'too few: the audio may not say the script'}).")
    if wer is None:
        why = ("no speech recogniser ran (align.asr_check is off)" if backend == "pocketsphinx"
               else "no transcript was made")
        return TranscriptCell("not checked", None, f"Not checked: {why}.{aligned}")
    if wer_trusted(backend, bool(align_cfg.get("pocketsphinx_wer_in_flag", False))):
        heard = row.get("script_transcript")
        heard = f" Heard: \u201c{heard}\u201d." if isinstance(heard, str) and heard else ""
        return TranscriptCell(f"{wer:.2f}", wer, f"Word error rate of {backend}'s transcript "
                              f"against the script (0 = every word heard).{heard}{aligned}")
    return TranscriptCell("not checked", None, (
        f"Not checked: the transcript came from {backend or 'an unknown recogniser'}'s free "
        "recognition (the offline recogniser, used with align.backend=pocketsphinx or when no "
        "whisperx model is installed), which misreads synthetic and unusual voices: a word error "
        "rate near 1 on audio that says the script. Its figure stays in results.parquet but not "
        "in this page or in QC. Install a whisperx model, or set "
        "align.pocketsphinx_wer_in_flag=true for clean read human speech." + aligned))


def finite_number(value: Any) -> float | None:
    """A finite real number (numpy's included) as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------- small words
def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 clip``, ``3 clips``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def duration_words(seconds: float | None) -> str:
    """``0.4 s``, ``45 s``, ``3 min 05 s``, ``2 h 10 min``."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
