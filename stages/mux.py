"""Mux: rendered video + the row's audio -> ``OUT/clips/<clip_id>.mp4``, ready to deliver.

* H.264 yuv420p, even sides, ``+faststart`` (moov first); the render stage already encodes with
  ``mux.crf`` / ``mux.preset``, so the video is stream-copied unless it must change (last frame held
  to reach the audio's length, or burned-in subtitles);
* AAC at ``mux.sample_rate`` (48 kHz), optionally two-pass EBU R128 loudness normalisation to
  ``mux.loudness_lufs``: measured with ``loudnorm``, then a linear gain (peak-limited at
  ``mux.true_peak_db``);
* video duration = audio duration within one frame (the output is cut at the audio's end);
* the file appears under its final name only when complete: written to ``OUT/clips/.tmp-*`` and
  moved with :func:`os.replace`; subtitles from ``OUT/work/<id>/subs.srt|vtt`` are placed beside
  it and, with ``align.subtitles=embedded``, added as a ``mov_text`` track (``burned``: drawn in);
* provenance (``provenance`` config section, :mod:`stages.provenance.c2pa`, :mod:`stages.provenance.disclosure`):
  the C2PA content credentials are signed into the temp file before the rename, so a clip is never
  visible unsigned (``c2pa_manifest_id``, ``c2pa_signer`` in the results); the disclosure
  statement goes into the MP4's metadata and the subtitle files; ``provenance.label`` burns a
  visible label in (the video is then re-encoded); ``provenance.require_consent`` fails a row
  without a ``consent`` cell.
"""
from __future__ import annotations

import json
import math
import os
import re
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

from stages.base import ClipError, Stage, SystemicError
from stages.config import PipelineConfig
from stages.ingest import present, work_dir_of
from stages.media.av import (
    MediaError,
    first_stream,
    input_args,
    media_duration,
    probe,
    require_ffmpeg,
    run_ffmpeg,
)
from stages.media.receipt import write_receipt
from stages.provenance.c2pa import CONSENT_MISSING, manifest_definition, sign_mp4
from stages.provenance.disclosure import (
    POSITIONS,
    label_image,
    metadata_args,
    overlay_filter,
    srt_with_cue,
    statement_text,
    vtt_with_note,
)
from stages.provenance.signing_identity import resolve_identity


def measure_loudness(audio: str | Path, lufs: float, tp: float, lra: float) -> dict[str, str]:
    """First ``loudnorm`` pass: the input's measured integrated loudness, true peak, range."""
    spec = f"loudnorm=I={lufs}:TP={tp}:LRA={lra}:print_format=json"
    err = run_ffmpeg([*input_args(audio), "-map", "0:a:0", "-af", spec, "-f", "null", "-"],
                     what="measuring loudness")
    found = re.findall(r"\{[^{}]*\}", err)
    if not found:
        raise MediaError("loudnorm printed no measurement")
    return json.loads(found[-1])


def loudness_filter(measured: dict[str, str], lufs: float, tp: float) -> str | None:
    """Second pass: a linear gain to the target integrated loudness, plus a peak limiter at ``tp``
    dBFS when the gain would push the measured true peak above it. (ffmpeg's own linear loudnorm
    silently switches to its dynamic mode in that case, which misses the target on short clips.)
    None when the input is silent and cannot be normalised."""
    value = float(measured.get("input_i", "-inf"))
    if not math.isfinite(value) or value < -70:
        return None
    gain = lufs - value
    spec = f"volume={gain:.2f}dB"
    if float(measured.get("input_tp", 0.0)) + gain > tp:
        spec += f",alimiter=limit={10 ** (tp / 20):.4f}:attack=5:release=50:level=disabled"
    return spec


def video_frames(info: dict[str, Any], fps: float) -> int:
    stream = first_stream(info, "video") or {}
    if stream.get("nb_frames") not in (None, "N/A", "0"):
        return int(stream["nb_frames"])
    return int(round(media_duration(info, "video") * fps))


class MuxStage(Stage):
    """Video + audio -> the delivered MP4 (see the module docstring)."""

    name = "mux"

    def __init__(self, config: PipelineConfig):
        self.cfg = config.mux
        self.subtitles = config.align.subtitles
        self.fps = int(config.ingest.fps)
        require_ffmpeg()
        self.prov = config.provenance
        if self.prov.label and self.prov.label_position not in POSITIONS:
            raise SystemicError(f"provenance.label_position={self.prov.label_position!r}: use one of "
                                f"{', '.join(POSITIONS)}")
        self.identity = (resolve_identity(self.prov.cert, self.prov.key, self.prov.identity_dir)
                         if self.prov.enabled else None)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.prov.require_consent and not present(row.get("consent")):
            raise ClipError(CONSENT_MISSING, field="consent", error_type="MissingConsent")
        work = work_dir_of(row)
        video = Path(row["video_path"] if present(row.get("video_path")) else work / "video.mp4").resolve()
        audio = next((row[k] for k in ("audio", "audio_16k") if present(row.get(k))), None)
        if not video.is_file():
            raise ClipError(f"no rendered video at {video}; the render stage must run first",
                            error_type="MissingVideo")
        if audio is None or not Path(audio).is_file():
            raise ClipError(f"audio file {audio} is missing", field="audio")
        audio = Path(audio).resolve()
        try:
            vinfo, ainfo = probe(video), probe(audio)
        except MediaError as exc:
            raise ClipError(str(exc), error_type="UnreadableMedia") from exc
        a_stream = first_stream(ainfo, "audio")
        if a_stream is None:
            raise ClipError(f"{audio.name} has no audio stream", field="audio")
        a_dur = (float(row["audio_duration_s"]) if present(row.get("audio_duration_s"))
                 else media_duration(ainfo, "audio"))
        fps = float(Fraction(str(row["source_rate"]))) if present(row.get("source_rate")) else self.fps
        v_dur = video_frames(vinfo, fps) / fps
        hold = a_dur - v_dur  # seconds of last frame to add (negative: video longer, cut)
        clips = (Path(row["out_dir"]) if present(row.get("out_dir")) else work.parent.parent) / "clips"
        clips.mkdir(parents=True, exist_ok=True)
        subs = {ext: work / f"subs.{ext}" for ext in ("srt", "vtt") if (work / f"subs.{ext}").is_file()}
        mode = self.subtitles if "srt" in subs else "sidecar"

        args: list[str] = [*input_args(video), *input_args(audio)]
        maps = ["-map", "1:a:0"]
        if mode == "embedded":
            args += input_args(subs["srt"])
            maps += ["-map", "2:s:0", "-c:s", "mov_text", "-metadata:s:s:0", "language=und"]
        vf = []
        if hold > 1.0 / fps:
            vf.append(f"tpad=stop_mode=clone:stop_duration={hold:.4f}")
        if mode == "burned":
            vf.append("subtitles=subs.srt")  # relative: ffmpeg runs in the work folder
        vcodec = self._video_codec(vf, vinfo, work, args)
        channels = int(a_stream.get("channels") or 1)
        acodec = ["-c:a", "aac", "-b:a", str(self.cfg.audio_bitrate),
                  "-ar", str(self.cfg.sample_rate), "-ac", str(min(channels, 2))]
        measured = self._loudnorm(audio, acodec)
        statement = statement_text(self.prov.label, self.prov.statement, present(row.get("source_video")))
        meta = metadata_args(statement) if self.prov.enabled or self.prov.label else []
        tmp = clips / f".tmp-{row['clip_id']}-{uuid.uuid4().hex[:8]}.mp4"
        signed = tmp.with_suffix(".signed.mp4")
        out: dict[str, Any] = {"output_path": None, "fps": round(fps, 4)}
        try:
            run_ffmpeg([*args, *vcodec, *maps, *acodec, *meta, "-t", f"{a_dur:.4f}",
                        "-movflags", "+faststart", "-f", "mp4", str(tmp)],
                       what="muxing video and audio", cwd=work)
            if self.identity is not None:
                definition = manifest_definition(row, statement=statement, label=self.prov.label,
                                                 label_seconds=self.prov.label_seconds)
                out["c2pa_manifest_id"] = sign_mp4(tmp, signed, definition, self.identity)
                out["c2pa_signer"] = self.identity.signer_name + (" (local, untrusted)" if self.identity.local else "")
                os.replace(signed, tmp)
            final = clips / f"{row['clip_id']}.mp4"
            out.update(self._place_subtitles(subs, clips, str(row["clip_id"]), a_dur, statement))
            info = probe(tmp)
            out.update(output_path=str(final), duration_s=round(media_duration(info), 4),
                       frames=video_frames(info, fps))
            if measured is not None:
                out["loudness_in_lufs"] = float(measured["input_i"])
            write_receipt(work, {**row, **out})
            os.replace(tmp, final)  # the commit point: delivered, recorded by the receipt
        except MediaError as exc:
            raise ClipError(str(exc), error_type="MuxFailed") from exc
        finally:
            tmp.unlink(missing_ok=True)
            signed.unlink(missing_ok=True)
        return out

    def _video_codec(self, vf: list[str], vinfo: dict[str, Any], work: Path, args: list[str]) -> list[str]:
        """Video map and codec options: a stream copy unless a filter must run; with
        ``provenance.label`` the label PNG is appended to ``args`` as an input and overlaid."""
        encode = ["-c:v", "libx264", "-preset", self.cfg.preset, "-crf", str(self.cfg.crf),
                  "-pix_fmt", "yuv420p"]
        if self.prov.label:
            height = int((first_stream(vinfo, "video") or {}).get("height") or 0)
            if height <= 0:
                raise ClipError("the rendered video has no frame height; the render stage must run "
                                "again", error_type="UnreadableMedia")
            png = work / "label.png"
            label_image(self.prov.label, height, self.prov.label_size, png)
            index = args.count("-i")
            args += input_args(png)
            chain = ",".join(vf) or "null"
            graph = (f"[0:v]{chain}[base];[base][{index}:v]"
                     f"{overlay_filter(self.prov.label_position, self.prov.label_seconds, height)},"
                     "format=yuv420p[v]")
            return ["-filter_complex", graph, "-map", "[v]", *encode]
        if vf:
            return ["-vf", ",".join([*vf, "format=yuv420p"]), "-map", "0:v:0", *encode]
        return ["-map", "0:v:0", "-c:v", "copy"]

    def _loudnorm(self, audio: Path, acodec: list[str]) -> dict[str, str] | None:
        """Two-pass loudness normalisation: appends ``-af`` to ``acodec``; returns the measurement."""
        lufs = self.cfg.loudness_lufs
        if lufs is None:
            return None
        tp, lra = self.cfg.true_peak_db, self.cfg.loudness_range
        try:
            measured = measure_loudness(audio, lufs, tp, lra)
        except MediaError as exc:
            raise ClipError(str(exc), field="audio", error_type="LoudnessFailed") from exc
        spec = loudness_filter(measured, lufs, tp)
        if spec is not None:
            acodec += ["-af", spec]
        return measured

    def _place_subtitles(self, subs: dict[str, Path], clips: Path, clip_id: str,
                         duration: float, statement: str) -> dict[str, Any]:
        """Subtitles beside the clip (temp name + rename), with the disclosure statement: a NOTE
        at the top of the VTT; with the label on, a first SRT cue shown as long as the label."""
        out: dict[str, Any] = {}
        disclose = self.prov.enabled or self.prov.label
        for ext, src in subs.items():
            dst = clips / f"{clip_id}.{ext}"
            tmp = clips / f".tmp-{clip_id}-{uuid.uuid4().hex[:8]}.{ext}"
            text = src.read_text(encoding="utf-8")
            if disclose and ext == "vtt":
                text = vtt_with_note(text, statement)
            elif ext == "srt" and self.prov.label:
                text = srt_with_cue(text, statement, self.prov.label_seconds or duration)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, dst)
            out[f"subtitles_{ext}"] = str(dst)
        return out
