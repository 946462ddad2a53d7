"""Subtitle cues from word timings, and SRT / WebVTT writers.

Cues follow common broadcast guidance: at most ``max_lines`` lines of at most ``max_chars``
characters, each cue shown ``min_seconds``..``max_seconds``, a new cue after a sentence end or a
long pause; cues never overlap and their times increase monotonically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from stages.transcript.script_text import Token

_SENTENCE_END = (".", "!", "?", "…", ".\"", "?\"", "!\"", ".”", "?”", "!”")


@dataclass
class TimedToken:
    """A display token with its spoken interval in seconds."""

    text: str
    start: float
    end: float


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def timed_tokens(tokens: Sequence[Token], word_times: Sequence[tuple[float, float] | None]
                 ) -> list[TimedToken]:
    """Give each display token the span of its spoken words.

    ``word_times`` has one entry per spoken word (flattened over ``tokens``); ``None`` marks a word
    the aligner could not time. Untimed tokens take the end of the previous timed token (or the
    start of the next one), so every token is shown and times stay monotonic.
    """
    n_words = sum(len(t.words) for t in tokens)
    if len(word_times) != n_words:
        raise ValueError(f"word_times has {len(word_times)} entries; the script has {n_words} words")
    spans: list[tuple[float, float] | None] = []
    k = 0
    for tok in tokens:
        times = [wt for wt in word_times[k:k + len(tok.words)] if wt is not None]
        k += len(tok.words)
        spans.append((min(s for s, _ in times), max(e for _, e in times)) if times else None)
    out: list[TimedToken] = []
    last_end = next((s[0] for s in spans if s is not None), 0.0)
    for tok, span in zip(tokens, spans):
        if span is None:
            span = (last_end, last_end)
        start = max(span[0], out[-1].start if out else 0.0)
        end = max(span[1], start)
        out.append(TimedToken(tok.display, start, end))
        last_end = end
    return out


def _wrap(words: Sequence[str], max_chars: int) -> list[str]:
    """Greedy line wrap; a single word longer than ``max_chars`` gets its own line."""
    lines: list[str] = []
    for w in words:
        if lines and len(lines[-1]) + 1 + len(w) <= max_chars:
            lines[-1] += " " + w
        else:
            lines.append(w)
    return lines


def build_cues(tokens: Sequence[TimedToken], *, max_chars: int = 42, max_lines: int = 2,
               min_seconds: float = 1.0, max_seconds: float = 7.0, pause_seconds: float = 0.8
               ) -> list[Cue]:
    """Group timed tokens into readable, non-overlapping cues."""
    if max_chars < 1 or max_lines < 1 or min_seconds <= 0 or max_seconds < min_seconds:
        raise ValueError("need max_chars >= 1, max_lines >= 1, 0 < min_seconds <= max_seconds")
    groups: list[list[TimedToken]] = []
    for tok in tokens:
        cur = groups[-1] if groups else None
        if cur:
            fits = len(_wrap([t.text for t in cur] + [tok.text], max_chars)) <= max_lines
            short = tok.end - cur[0].start <= max_seconds
            paused = tok.start - cur[-1].end >= pause_seconds
            sentence_done = cur[-1].text.endswith(_SENTENCE_END) and \
                cur[-1].end - cur[0].start >= min_seconds
            if fits and short and not paused and not sentence_done:
                cur.append(tok)
                continue
        groups.append([tok])
    cues: list[Cue] = []
    for i, grp in enumerate(groups):
        start = grp[0].start
        end = max(grp[-1].end, start + min_seconds)
        end = min(end, start + max_seconds)
        if i + 1 < len(groups):
            end = min(end, groups[i + 1][0].start)
        if cues and start < cues[-1].end:
            start = cues[-1].end
        end = max(end, start + 0.001)
        cues.append(Cue(round(start, 3), round(end, 3), _wrap([t.text for t in grp], max_chars)))
    return cues


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt_text(cues: Sequence[Cue]) -> str:
    """SubRip: numbered blocks, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``."""
    blocks = [f"{i}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n{c.text}\n"
              for i, c in enumerate(cues, 1)]
    return "\n".join(blocks)


def vtt_text(cues: Sequence[Cue]) -> str:
    """WebVTT: ``WEBVTT`` header, ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cue timings."""
    blocks = [f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n{c.text}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def write_subtitles(cues: Sequence[Cue], srt_path: Path, vtt_path: Path) -> None:
    srt_path.write_text(srt_text(cues), encoding="utf-8")
    vtt_path.write_text(vtt_text(cues), encoding="utf-8")


def parse_cue_times(text: str) -> list[tuple[float, float]]:
    """Cue (start, end) pairs of an SRT or VTT text; used by checks and tests."""
    out = []
    for line in text.splitlines():
        if "-->" in line:
            a, b = (p.strip().split()[0] for p in line.split("-->"))
            out.append((_parse_stamp(a), _parse_stamp(b)))
    return out


def _parse_stamp(stamp: str) -> float:
    hms, ms = stamp.replace(",", ".").rsplit(".", 1)
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + s + int(ms) / 1000
