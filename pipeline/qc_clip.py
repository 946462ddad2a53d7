"""``fixtalk qc CLIP``: the QC stage's measurement and verdict for one existing clip.

    fixtalk qc CLIP [--portrait IMAGE] [--script TEXT | --script-file FILE] [--format json|table]
                    [--config FILE] [--set key=value ...]

Any MP4 (or other video ffmpeg reads), made by this project or another tool, is measured by
:class:`stages.qc.QCStage` with its own thresholds (the ``qc:`` section; ``--config`` / ``--set``
change them as for ``fixtalk run``). The speech is the clip's own audio track.

* ``--portrait``: the identity reference. Without it, the reference is the clip's own first
  frame with a face, so CSIM then says whether the face stays the person it starts as (drift,
  a face that morphs), not whether it is the right person; ``qc_reference`` says which.
* ``--script`` / ``--script-file``: the words spoken. The clip's audio is force-aligned to them
  with offline pocketsphinx, as the align stage does (English), which gives the phone timings
  of the phone-based lip-sync checks and the transcript check. Without a script only the
  phone-free checks run (the mouth moves in speech, rests in pauses).

Prints every metric, ``qc_status`` and ``qc_reasons`` (``--format json``: one JSON object).
Exit status: 0 when the clip was measured (whatever the verdict), 2 on usage errors (bad
arguments, a missing portrait or script file, a bad config), 1 when the clip cannot be read.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

EXIT_OK, EXIT_UNREADABLE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors, which is our usage exit code too."""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fixtalk qc", description="QC of one existing clip: identity, lip sync, "
                "duration, loudness and format, with the pipeline's own code and thresholds.")
    p.add_argument("clip", help="the clip (MP4 or any video ffmpeg reads)")
    p.add_argument("--portrait", help="image of the presenter: the identity reference "
                   "(default: the clip's first frame with a face)")
    words = p.add_mutually_exclusive_group()
    words.add_argument("--script", help="the words spoken (enables the phone-based sync checks)")
    words.add_argument("--script-file", help="a text file with the words spoken")
    p.add_argument("--format", choices=("json", "table"), default="table")
    p.add_argument("--config", help="YAML config file (its qc: section sets the thresholds)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set qc.phone_corr_warn=0.15")
    return p


def _usage(message: str) -> int:
    print(f"fixtalk qc: {message}", file=sys.stderr)
    return EXIT_USAGE


def _readable_video(clip: Path) -> str | None:
    """None when ``clip`` has a video stream ffprobe reads, else why not."""
    from stages.media.av import MediaError, first_stream, probe
    from stages.media.footage import is_still_image

    if not clip.is_file():
        return f"{clip} does not exist or is not a file"
    try:
        info = probe(clip)
    except MediaError as exc:
        return f"{clip} cannot be read as a video ({exc})"
    if first_stream(info, "video") is None:
        return f"{clip} has no video stream"
    if is_still_image(info):
        return f"{clip} is a still image, not a clip (give its portrait with --portrait)"
    return None


def first_face_frame(clip: Path, out: Path, max_frames: int = 50) -> Path | None:
    """Save the first of the clip's first ``max_frames`` frames with a face as a PNG."""
    import cv2

    from fixtalk.measure.faces import detect_faces
    from stages.media.av import iter_video_frames

    seen = 0
    for chunk in iter_video_frames(clip):
        for frame in chunk:
            if detect_faces(frame, upsample=1 if max(frame.shape[:2]) < 800 else 0):
                cv2.imwrite(str(out), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                return out
            seen += 1
            if seen >= max_frames:
                return None
    return None


def own_rate(clip: Path) -> str | None:
    """The clip's frame rate as ffprobe gives it (``30000/1001``), None when unknown."""
    from stages.media.av import first_stream, probe

    stream = first_stream(probe(clip), "video") or {}
    rate = stream.get("avg_frame_rate") or stream.get("r_frame_rate")
    return rate if rate and rate not in ("0/0", "0") else None


def measure(clip: Path, *, portrait: str | None, script: str | None, config,
            expected_rate: str | None = None) -> dict[str, Any]:
    """The QC row of ``clip`` (every metric, ``qc_status``, ``qc_reasons``). The frame rate is
    checked against ``expected_rate`` when given, else against ``ingest.fps``."""
    from stages.qc import QCStage

    with tempfile.TemporaryDirectory(prefix="fixtalk-qc-") as tmp:
        work = Path(tmp)
        row: dict[str, Any] = {"clip_id": clip.stem, "output_path": str(clip), "out_dir": str(work),
                               "work_dir": str(work / "work"), "status": "ok"}
        if expected_rate:
            row["source_rate"] = expected_rate
        reference = portrait or first_face_frame(clip, work / "reference.png")
        row["portrait"] = None if reference is None else str(reference)
        if script:
            from stages.align import AlignStage

            (work / "work").mkdir()
            config.align.backend = "pocketsphinx"  # phone timings (whisperx gives words only)
            aligned = AlignStage(config).run_row({**row, "audio": str(clip), "script": script})
            if aligned.get("status") != "failed":
                row.update({k: v for k, v in aligned.items() if k not in row})
        out = QCStage(config).run_row(row)
        out["qc_reference"] = ("portrait" if portrait else
                               "first frame of the clip" if reference else "none (no face found)")
        drop = {"out_dir", "work_dir", "qc_json", "qc_plot", "subtitle_srt", "subtitle_vtt",
                "words_json", "portrait"}
        return {"clip": str(clip), **{k: v for k, v in out.items()
                                      if k not in drop and not k.startswith("node_")}}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value


def print_table(result: dict[str, Any], out=None) -> None:
    out = out or sys.stdout
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key == "qc_reasons":
            continue
        value = _plain(value)
        shown = f"{value:.4g}" if isinstance(value, float) else ("-" if value is None else value)
        print(f"{key:<{width}}  {shown}", file=out)
    reasons = [r for r in str(result.get("qc_reasons") or "").split("; ") if r]
    print(f"{'qc_reasons':<{width}}  {'-' if not reasons else reasons[0]}", file=out)
    for reason in reasons[1:]:
        print(f"{'':<{width}}  {reason}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from pipeline.config import ConfigError, load_config

    if args.portrait and not Path(args.portrait).is_file():
        return _usage(f"--portrait {args.portrait}: no such file")
    script = args.script
    if args.script_file:
        try:
            script = Path(args.script_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return _usage(f"--script-file {args.script_file}: {exc}")
    try:
        config = load_config(args.config, args.overrides)
    except (ConfigError, OSError) as exc:
        return _usage(str(exc))
    clip = Path(args.clip)
    problem = _readable_video(clip)
    if problem:
        print(f"fixtalk qc: {problem}", file=sys.stderr)
        return EXIT_UNREADABLE
    # a clip made elsewhere is checked at its own frame rate unless --set ingest.fps=N asks for one
    asked = any(o.split("=", 1)[0].strip() == "ingest.fps" for o in args.overrides or [])
    result = measure(clip, portrait=args.portrait, script=(script or "").strip() or None, config=config,
                     expected_rate=None if asked else own_rate(clip))
    if result.get("status") == "failed":
        print(f"fixtalk qc: {clip}: {result.get('error_message')}", file=sys.stderr)
        return EXIT_UNREADABLE
    if args.format == "json":
        print(json.dumps({k: _plain(v) for k, v in result.items()}, default=str))
    else:
        print_table(result)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
