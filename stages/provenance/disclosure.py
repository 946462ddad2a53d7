"""Disclosure that a clip is AI-generated: the visible label, the metadata statement, subtitles.

* The **label** (``provenance.label``, off by default) is drawn with PIL into a transparent PNG
  (white text on a translucent dark box) and laid over the video by ffmpeg's ``overlay`` in a
  corner (``provenance.label_position``), for the first ``provenance.label_seconds`` or the whole
  clip; its height is ``provenance.label_size`` of the frame height. Only then is the video
  re-encoded (otherwise mux stream-copies it).
* The **statement** (``provenance.statement``, else the label, else :data:`DEFAULT_STATEMENT`)
  goes into the MP4's ``comment`` and ``description`` metadata, a ``NOTE`` block at the top of the
  ``.vtt`` and, when the label is on, a first cue of the ``.srt`` (SubRip has no comments) shown
  as long as the label.
"""
from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DEFAULT_STATEMENT = "AI-generated video: made with FixTalk Studio from a portrait and speech."
DUB_STATEMENT = ("AI-edited video: the speaker's mouth was re-rendered with FixTalk Studio to follow "
                 "speech they did not record.")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
_FONT_NAMES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "LiberationSans-Bold.ttf")


def statement_text(label: str | None, statement: str | None, dubbed: bool = False) -> str:
    """The disclosure sentence: the configured statement, else the label, else the default (for
    a dub of footage: that the footage was edited)."""
    default = DUB_STATEMENT if dubbed else DEFAULT_STATEMENT
    text = (statement or label or default).strip()
    return " ".join(text.split()) or default


@lru_cache(maxsize=8)
def _font_file() -> str | None:
    """A TrueType font: DejaVu/Liberation by name (Pillow searches the system font folders),
    else whatever ``fc-match`` offers for sans."""
    for name in _FONT_NAMES:
        try:
            ImageFont.truetype(name, 12)
            return name
        except OSError:
            continue
    if shutil.which("fc-match"):
        found = subprocess.run(["fc-match", "-f", "%{file}", "sans:bold"], capture_output=True,
                               text=True, check=False).stdout.strip()
        if found and Path(found).is_file():
            return found
    return None


def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    name = _font_file()
    return ImageFont.truetype(name, px) if name else ImageFont.load_default(size=px)


def label_image(text: str, frame_height: int, size: float, path: Path) -> tuple[int, int]:
    """Write the label as an RGBA PNG whose height is ``size`` of ``frame_height`` (at least
    12 px); returns its (width, height)."""
    box_h = max(12, int(round(frame_height * size)))
    pad = max(2, box_h // 6)
    font = _font(max(8, box_h - 2 * pad))
    left, top, right, bottom = font.getbbox(text)
    w, h = right - left + 2 * pad, box_h
    img = Image.new("RGBA", (w + w % 2, h + h % 2), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((0, 0, img.width - 1, img.height - 1), radius=pad, fill=(0, 0, 0, 170))
    draw.text((pad - left, (h - (bottom - top)) // 2 - top), text, font=font, fill=(255, 255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return img.width, img.height


def overlay_filter(position: str, seconds: float | None, frame_height: int) -> str:
    """The ``overlay`` filter placing the label (second input) in ``position``."""
    if position not in POSITIONS:
        raise ValueError(f"provenance.label_position={position!r}: use one of {', '.join(POSITIONS)}")
    margin = max(4, frame_height // 40)
    x = f"{margin}" if position.endswith("left") else f"main_w-overlay_w-{margin}"
    y = f"{margin}" if position.startswith("top") else f"main_h-overlay_h-{margin}"
    spec = f"overlay=x={x}:y={y}:format=auto"
    if seconds:
        spec += f":enable='lt(t\\,{float(seconds):.3f})'"
    return spec


def metadata_args(statement: str) -> list[str]:
    """ffmpeg output options writing the statement into the MP4's comment and description."""
    return ["-metadata", f"comment={statement}", "-metadata", f"description={statement}"]


def _one_line(text: str) -> str:
    return " ".join(text.replace("-->", "->").split())


def vtt_with_note(vtt: str, statement: str) -> str:
    """The WebVTT text with ``NOTE <statement>`` right after its header block."""
    header, sep, rest = vtt.partition("\n\n")
    note = f"NOTE {_one_line(statement)}\n\n"
    return f"{header}\n\n{note}{rest}" if sep else f"{header.rstrip()}\n\n{note}"


def _stamp(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def srt_with_cue(srt: str, statement: str, seconds: float) -> str:
    """The SubRip text with a first cue (0 to ``seconds``) showing the statement; the other
    cues are renumbered from 2 (cue numbers must count up from 1)."""
    blocks = [b.strip("\n") for b in srt.replace("\r\n", "\n").split("\n\n") if b.strip()]
    out = [f"1\n{_stamp(0.0)} --> {_stamp(max(seconds, 0.5))}\n[{_one_line(statement)}]"]
    for number, block in enumerate(blocks, 2):
        lines = block.split("\n")
        if lines and lines[0].strip().isdigit():
            lines = lines[1:]
        out.append("\n".join([str(number), *lines]))
    return "\n\n".join(out) + "\n"
