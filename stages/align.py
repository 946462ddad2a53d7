"""Align the script to the audio: word timings, subtitles and the transcript check.

Backends (``align.backend``): ``whisperx`` (faster-whisper transcript + wav2vec2 CTC alignment of
the script, many languages, models from the local cache only), ``pocketsphinx`` (offline English
forced alignment of the script, words and phones) and ``auto`` (whisperx when its models load,
else pocketsphinx). The backend used is recorded per row in ``align_backend``.

Per row with a script, in ``OUT/work/<clip_id>/``: ``words.json`` (word and phone timings),
``subs.srt`` and ``subs.vtt`` (the mux stage places them beside the MP4). Columns:

* ``script_wer``: word error rate of what the audio says (whisperx transcript, or pocketsphinx free
  recognition with its default English LM) against the script, both normalised
  (:mod:`stages.transcript.script_text`). pocketsphinx recognition is usable on clean read speech (LibriVox:
  WER 0.1-0.6 on matching pairs) but nearly useless on robotic TTS such as espeak-ng (WER ~1 even
  when the audio matches), so by default it is reported but not used for the flag
  (``align.pocketsphinx_wer_in_flag``).
* ``script_aligned_share``: share of script words the aligner placed with confidence
  (pocketsphinx: acoustic score >= ``pocketsphinx_min_word_confidence`` nats/frame; whisperx:
  wav2vec2 word score >= ``whisperx_min_word_score``). A script forced onto other speech either
  finds no path at all (share 0) or scores poorly. Measured with the defaults (-4.0, 0.5) on the
  five LibriVox clips: matching pairs 1.0, swapped pairs <= 0.43; on espeak-ng speech of the same
  sentences, matching pairs 0.86-1.0 except one short sentence (0.25), swapped pairs 0.
* ``script_mismatch``: ``script_aligned_share < min_aligned_share`` or (trusted WER and
  ``script_wer > max_wer``). None when the row has no script.

When the alignment fails, the subtitles are still written with times spread evenly over the audio
(``subtitle_timing="estimated"``) and the row is flagged. Rows without a script get no subtitles
and no WER; that is not a failure.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from stages.base import ClipError, Stage, SystemicError
from stages.config import PipelineConfig
from stages.ingest import work_dir_of
from stages.media.av import MediaError, decode_audio
from stages.speech import filled
from stages.transcript.pocketsphinx_align import pcm16
from stages.transcript.script_text import (
    normalise_words,
    script_variants,
    wer_trusted,
    word_error_rate,
)
from stages.transcript.subtitles import build_cues, timed_tokens, write_subtitles
from stages.transcript.whisperx_glue import WhisperxBackend, WhisperxUnavailable, load_backend

SR = 16000
#: ``align.subtitles``: SRT/VTT beside the clip only; plus a soft ``mov_text`` track in the MP4;
#: plus drawn into the picture (ffmpeg ``subtitles`` filter, libass). The mux stage applies them.
SUBTITLE_MODES = ("sidecar", "embedded", "burned")
log = logging.getLogger(__name__)
EMPTY = {"align_backend": None, "subtitle_srt": None, "subtitle_vtt": None, "words_json": None,
         "script_wer": None, "script_transcript": None, "script_aligned_share": None,
         "script_mismatch": None, "subtitle_timing": None}


def load_audio_16k(row: dict[str, Any]) -> np.ndarray:
    """float32 mono 16 kHz audio of the row: ingest's ``audio_16k`` (or ``audio_wav``), else the
    ``audio`` file decoded with ffmpeg."""
    for col in ("audio_16k", "audio_wav"):
        if filled(row.get(col)) and Path(str(row[col])).is_file():
            data, sr = sf.read(str(row[col]), dtype="float32", always_2d=True)
            if sr == SR:
                return data.mean(axis=1)
            return decode_audio(row[col], SR)
    if not filled(row.get("audio")):
        raise ClipError("no audio to align the script to; give an audio file or let the speech "
                        "stage synthesise one", field="audio")
    try:
        return decode_audio(row["audio"], SR)
    except MediaError as exc:
        raise ClipError(str(exc), field="audio", error_type="UnreadableAudio") from exc


def spread_evenly(words: list[str], seconds: float) -> list[tuple[float, float]]:
    """Estimated word times: the audio divided in proportion to word length (+1 for the gap)."""
    weights = np.array([len(w) + 1 for w in words], dtype=np.float64)
    edges = np.concatenate([[0.0], np.cumsum(weights) / weights.sum() * seconds])
    return [(float(edges[i]), float(edges[i + 1])) for i in range(len(words))]


class AlignStage(Stage):
    """Script alignment, subtitles and transcript check (see the module docstring)."""

    name = "align"

    def __init__(self, config: PipelineConfig, *, whisperx_backend: WhisperxBackend | None = None):
        self.cfg = config.align
        self.whisperx: WhisperxBackend | None = whisperx_backend
        self.pocketsphinx = None
        self.whisperx_unavailable: str | None = None
        choice = self.cfg.backend
        if choice not in ("auto", "whisperx", "pocketsphinx"):
            raise SystemicError(f"align.backend={choice!r}; expected auto, whisperx or pocketsphinx")
        if self.cfg.subtitles not in SUBTITLE_MODES:
            raise SystemicError(f"align.subtitles={self.cfg.subtitles!r}; expected "
                                f"{', '.join(SUBTITLE_MODES)} (files beside the MP4, plus a soft "
                                "mov_text track, or drawn into the picture)")
        if not self.cfg.enabled:
            return
        if choice in ("auto", "whisperx") and self.whisperx is None:
            try:
                self.whisperx = load_backend(
                    language=self.cfg.language, model=self.cfg.whisperx_model,
                    model_dir=self.cfg.whisperx_model_dir,
                    compute_type=self.cfg.whisperx_compute_type,
                    align_model=self.cfg.whisperx_align_model,
                    align_model_dir=self.cfg.whisperx_align_model_dir, device=self.cfg.device)
            except WhisperxUnavailable as exc:
                if choice == "whisperx":
                    raise SystemicError(f"align.backend=whisperx but {exc}") from exc
                self.whisperx_unavailable = str(exc)
                log.info("whisperx unavailable, using pocketsphinx: %s", exc)
        if choice == "pocketsphinx" or self.whisperx is None:
            if not self.cfg.language.lower().startswith("en"):
                raise SystemicError(
                    f"align.language={self.cfg.language!r}: pocketsphinx aligns English only and "
                    f"whisperx is unavailable ({self.whisperx_unavailable}); put whisperx models "
                    "in the local cache or set align.enabled=false")
            from stages.transcript.pocketsphinx_align import PocketsphinxAligner

            self.whisperx = None
            self.pocketsphinx = PocketsphinxAligner()
        self.backend = "whisperx" if self.whisperx is not None else "pocketsphinx"

    def run_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """Every output row carries all of this stage's columns (None when not produced, also on
        failed rows): a batch mixing rows with and without a script keeps ``None`` cells and a
        stable schema instead of columns that exist in some Ray blocks only."""
        out = super().run_row(row)
        for key in EMPTY:
            out.setdefault(key, None)
        return out

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if not self.cfg.enabled:
            return dict(EMPTY)
        script = str(row["script"]).strip() if filled(row.get("script")) else ""
        variants = script_variants(script)
        if not any(t.words for t in variants[0]):
            if filled(row.get("work_dir")) or filled(row.get("out_dir")):  # no stale subtitles
                for name in ("subs.srt", "subs.vtt", "words.json"):
                    (work_dir_of(row) / name).unlink(missing_ok=True)
            return dict(EMPTY)
        audio = load_audio_16k(row)
        seconds = len(audio) / SR
        if seconds <= 0:
            raise ClipError("the audio is empty; nothing to align the script to", field="audio")
        hyp, span = self._transcribe(audio)
        best = None
        for tokens in variants:  # number readings differ ("twenty twenty four" / "two thousand...")
            result = self._align(tokens, audio, hyp, span)
            if best is None or result["share"] > best["share"]:
                best = result
            if best["share"] >= self.cfg.min_aligned_share:
                break
        tokens, words, times = best["tokens"], best["words"], best["times"]
        conf, aligned, phones, hyp, note = (best[k] for k in ("conf", "aligned", "phones", "hyp", "note"))
        share, wer = best["share"], best["wer"]
        trusted = wer_trusted(self.backend, self.cfg.pocketsphinx_wer_in_flag)
        mismatch = share < self.cfg.min_aligned_share or bool(
            trusted and wer is not None and wer > self.cfg.max_wer)
        timing = "aligned"
        if all(t is None for t in times):
            times, timing = spread_evenly(words, seconds), "estimated"
        work = work_dir_of(row)
        srt, vtt, js = work / "subs.srt", work / "subs.vtt", work / "words.json"
        cues = build_cues(timed_tokens(tokens, times), max_chars=self.cfg.cue_max_chars,
                          max_lines=self.cfg.cue_max_lines, min_seconds=self.cfg.cue_min_seconds,
                          max_seconds=self.cfg.cue_max_seconds)
        write_subtitles(cues, srt, vtt)
        js.write_text(json.dumps({
            "backend": self.backend, "timing": timing, "note": note, "audio_seconds": seconds,
            "words": [{"word": w, "start": None if t is None else round(t[0], 3),
                       "end": None if t is None else round(t[1], 3),
                       "confidence": c, "aligned": a,
                       **({"phones": phones[i]} if phones else {})}
                      for i, (w, t, c, a) in enumerate(zip(words, times, conf, aligned))],
            "transcript": None if hyp is None else " ".join(hyp),
        }, indent=1))
        return {"align_backend": self.backend, "subtitle_srt": str(srt), "subtitle_vtt": str(vtt),
                "words_json": str(js), "script_wer": None if wer is None else round(wer, 4),
                "script_transcript": None if hyp is None else " ".join(hyp),
                "script_aligned_share": round(share, 4), "script_mismatch": bool(mismatch),
                "subtitle_timing": timing}

    # -- backends --------------------------------------------------------------------------
    def _transcribe(self, audio: np.ndarray) -> tuple[list[str] | None, tuple[float, float] | None]:
        """What the audio says (normalised words, None when not checked) and the speech span."""
        if self.backend == "whisperx":
            transcript, segments = self.whisperx.transcribe(audio)
            span = None
            if segments:
                span = (max(0.0, min(s["start"] for s in segments) - 0.2),
                        max(s["end"] for s in segments) + 0.2)
            return normalise_words(transcript), span
        if not self.cfg.asr_check:
            return None, None
        return self.pocketsphinx.recognise(pcm16(audio)), None

    def _align(self, tokens: list, audio: np.ndarray, hyp: list[str] | None,
               span: tuple[float, float] | None) -> dict[str, Any]:
        words = [w for t in tokens for w in t.words]
        if self.backend == "whisperx":
            spans = self.whisperx.align_words(words, audio, span)
            times = [None if s.start is None or s.end is None else (s.start, s.end) for s in spans]
            conf = [s.score for s in spans]
            thr = self.cfg.whisperx_min_word_score
            aligned = [c is not None and c >= thr and t is not None for c, t in zip(conf, times)]
            phones, note = None, None
        else:
            res = self.pocketsphinx.align(pcm16(audio), words)
            thr = self.cfg.pocketsphinx_min_word_confidence
            times, phones = res.times, res.phones
            aligned = [c is not None and c >= thr for c in res.confidence]
            conf = [None if c is None else round(max(c, -99.0), 3) for c in res.confidence]
            note = res.failed or (f"out-of-vocabulary: {' '.join(res.oov)}" if res.oov else None)
        return {"tokens": tokens, "words": words, "times": times, "conf": conf,
                "aligned": aligned, "phones": phones, "hyp": hyp, "note": note,
                "share": sum(aligned) / len(words),
                "wer": None if hyp is None else word_error_rate(words, hyp)}
