"""Lip-sync QC on clips whose truth is known (docs/qc.md, "Lip sync: validation").

    python benchmarks/lip_sync_qc.py [--portraits astronaut grace_hopper] [--json OUT.json]

Each case of :mod:`fixtalk.train.sync_cases` (real LibriVox speech with a 1.5 s pause, a
portrait's mouth driven by its phones: synced, late by 0.2 / 0.5 / 2 s, frozen, talking through
the pause) is rendered to an MP4 and measured by the QC stage itself, twice: with the phone
timings the align stage (pocketsphinx) writes for the speech's script, and without (no script).
Then the null distribution of the phone figures: the synced clip's measured mouth against its
phones moved by 1-6 s (circularly), i.e. against speech it does not say. Prints one table;
8-10 minutes on 2 CPU cores shared with other jobs (``--portraits grace_hopper`` halves it).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, not an installed copy

from fixtalk.measure.phone_sync import Phone, phone_sync, read_phones  # noqa: E402
from fixtalk.train.data_format import FPS, SAMPLE_RATE  # noqa: E402
from fixtalk.train.sync_cases import CASES, speech_with_pause, write_case  # noqa: E402
from fixtalk.train.synthetic import load_portrait  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402

COLUMNS = ("mouth_motion_speech", "mouth_motion_pause", "pause_motion_ratio", "pause_seconds",
           "phone_corr", "phone_lag_frames", "bilabial_closure", "sync_corr", "sync_lag_frames")


def aligned_words(speech, work: Path, config: PipelineConfig) -> str:
    """words.json of the speech's script, written by the align stage (pocketsphinx)."""
    from stages.align import AlignStage

    wav = work / "speech.wav"
    sf.write(wav, speech.audio, SAMPLE_RATE)
    config.align.backend, config.align.asr_check = "pocketsphinx", False
    row = {"clip_id": "speech", "audio_16k": str(wav), "script": speech.text, "work_dir": str(work)}
    out = AlignStage(config).process_row(row)
    return out["words_json"]


def null_phone_figures(mouth: np.ndarray, phones: list[Phone], seconds: float) -> dict[str, list[float]]:
    """Phone figures of ``mouth`` against its phones moved circularly by 1-6 s (other speech)."""
    corr, closure = [], []
    for shift in np.arange(1.0, 6.01, 0.25):
        moved = [Phone(p.name, (p.start + shift) % seconds, (p.end + shift) % seconds) for p in phones]
        res = phone_sync(mouth, [p for p in moved if p.end > p.start], FPS)  # (wrapped ones dropped)
        corr.append(res.corr)
        closure.append(res.bilabial_closure)
    return {"phone_corr": corr, "bilabial_closure": closure}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--portraits", nargs="+", default=["astronaut", "grace_hopper"])
    ap.add_argument("--json", help="also write every figure here")
    args = ap.parse_args(argv)
    from stages.qc import QCStage

    t0 = time.monotonic()
    config = PipelineConfig()
    config.qc.sample_every = 25  # identity is not under test: one embedding a second
    stage = QCStage(config)
    speech = speech_with_pause()
    report: dict = {"pause": speech.pause, "seconds": len(speech.audio) / SAMPLE_RATE, "rows": [], "null": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        words = aligned_words(speech, work, config)
        phones = read_phones(words)
        print(f"speech {report['seconds']:.1f} s, pause {speech.pause[0]:.2f}-{speech.pause[1]:.2f} s, "
              f"{len(phones)} aligned phones", file=sys.stderr)
        for name in args.portraits:
            picture = load_portrait(name)
            for case in CASES:
                clip = write_case(work / f"{name}-{case}.mp4", case, speech, picture)
                for script in (True, False):
                    row = {"clip_id": clip.stem, "output_path": str(clip), "out_dir": str(work),
                           "status": "ok", "words_json": words if script else None}
                    out = stage.run_row(row)
                    lip = "; ".join(r for r in str(out["qc_reasons"]).split("; ")
                                    if r.startswith(("sync", "lip jitter")))
                    report["rows"].append({"portrait": name, "case": case, "script": script,
                                           **{k: out.get(k) for k in COLUMNS},
                                           "lip_reasons": lip or "-"})
                    if case == "synced" and script:
                        mouth = np.array(json.loads(Path(out["qc_json"]).read_text())["mouth"], float)
                        report["null"][name] = null_phone_figures(mouth, phones, report["seconds"])
                print(f"[{time.monotonic() - t0:.0f} s] {name} {case}", file=sys.stderr)
    print_table(report)
    print(f"({time.monotonic() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3f}"
    return str(value)


def print_table(report: dict) -> None:
    head = ("portrait", "case", "script", *COLUMNS, "lip-sync reasons")
    print(" | ".join(head))
    for r in report["rows"]:
        print(" | ".join([r["portrait"], r["case"], "yes" if r["script"] else "no",
                          *(_fmt(r[k]) for k in COLUMNS), r["lip_reasons"]]))
    for name, null in report["null"].items():
        for key, values in null.items():
            v = np.array([x for x in values if x == x])
            if not v.size:
                continue
            print(f"null ({name}, phones moved 1-6 s): {key} min {v.min():.3f} median "
                  f"{np.median(v):.3f} max {v.max():.3f} (n={v.size})")


if __name__ == "__main__":
    sys.exit(main())
