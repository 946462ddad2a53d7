"""Delivery checks of a finished clip: streams, codecs, durations, loudness.

ffprobe gives codecs, pixel format, frame rate, sample rate and stream durations; ffmpeg's
``ebur128`` filter (ITU-R BS.1770 / EBU R128) gives the integrated loudness (LUFS) and the true
peak (dBTP) of the output audio. All calls are argv lists through :mod:`stages.media.av`.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from stages.media.av import first_stream, input_args, media_duration, probe, run_ffmpeg, stream_fps

_SUMMARY = re.compile(r"Summary:(.*)", re.S)
_INTEGRATED = re.compile(r"I:\s*(-?[\d.]+|-?inf|nan)\s*LUFS")
_TRUE_PEAK = re.compile(r"True peak:\s*Peak:\s*(-?[\d.]+|-?inf|nan)\s*dBFS")


def _num(text: str) -> float:
    return float(text.replace("inf", "Infinity")) if "inf" in text else float(text)


def loudness(path: str | Path) -> tuple[float, float]:
    """``(integrated LUFS, true peak dBTP)`` of the first audio stream (``-inf`` when silent;
    ebur128 reports -70 LUFS, its gate, for digital silence)."""
    stderr = run_ffmpeg([*input_args(path), "-map", "0:a:0", "-af", "ebur128=peak=true",
                         "-f", "null", "-"], what=f"measuring the loudness of {Path(path).name}")
    match = _SUMMARY.search(stderr)
    summary = match.group(1) if match else stderr
    lufs = _INTEGRATED.search(summary)
    peak = _TRUE_PEAK.search(summary)
    return (_num(lufs.group(1)) if lufs else math.nan, _num(peak.group(1)) if peak else math.nan)


def delivery_metrics(path: str | Path, *, with_loudness: bool = True) -> dict[str, Any]:
    """Stream facts of a finished clip as result columns.

    Keys: duration_video_s, duration_audio_s (the clip's audio stream; NaN when there is none),
    vcodec, pix_fmt, width, height, fps_out, acodec, sample_rate, lufs, true_peak_db.
    """
    info = probe(path)
    video, audio = first_stream(info, "video"), first_stream(info, "audio")
    nan = math.nan
    out: dict[str, Any] = {
        "duration_video_s": media_duration(info, "video") if video else nan,
        "duration_audio_s": media_duration(info, "audio") if audio else nan,
        "vcodec": video.get("codec_name") if video else None,
        "pix_fmt": video.get("pix_fmt") if video else None,
        "width": int(video.get("width", 0)) if video else 0,
        "height": int(video.get("height", 0)) if video else 0,
        "fps_out": round(stream_fps(video), 3) if video else nan,
        "acodec": audio.get("codec_name") if audio else None,
        "sample_rate": int(audio.get("sample_rate", 0)) if audio else 0,
        "lufs": nan,
        "true_peak_db": nan,
    }
    if audio is not None and with_loudness:
        out["lufs"], out["true_peak_db"] = loudness(path)
    return out


def audio_file_duration(path: str | Path) -> float:
    """Duration in seconds of an audio file (e.g. the row's 16 kHz speech wav)."""
    return media_duration(probe(path), "audio")
