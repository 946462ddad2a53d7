"""Dubs of real footage judged against the footage's own mouth (issue 29, deliverable 7).

    .venv/bin/python benchmarks/dub_quality.py [--cases kitchen,red,...] [--modes model,memory]
        [--out DIR] [--seconds S] [--set key=value ...] [--remeasure]

Cases (footage from ``../shared/real/``, used in place; speech written to ``DIR/inputs``):
``kitchen`` presenter_kitchen.mp4 with presenter_kitchen_new_speech.wav; ``red`` presenter_red.mp4
with english_speech_60s.wav cut to the footage's length; ``kitchen_pause`` / ``red_pause`` the
same speech cut 2 s shorter with 2 s of silence inserted at the quietest point near its middle;
``720p_a`` / ``720p_b`` (little speech in the footage) with English speech cut to their length.
``--seconds`` cuts every speech shorter (development). Each case is dubbed by ``fixtalk run``
(local engine, one row, ``--set dub.mouth=<mode>``; rows carry no script) into ``DIR/runs``,
which caches the footage's track and fit across cases and modes: the first run of a footage
pays for them (``t_adapt``). A rerun only dubs and measures what ``DIR/cases`` lacks.

Measured with :mod:`fixtalk.measure.mouth_quality` on every frame, dub and footage alike
(landmarks fitted on each frame with jitter averaging, mouth boxes placed by the footage track's
eyes, frames where the head moves too fast to fit left out of both). The footage's own figures
come from its usable frames where it talks (its own audio; all of them without audio). Phones:
pocketsphinx free recognition of the speech, force-aligned by the project's aligner.

Targets: opening std in speech / footage's >= 0.8; mouth sharpness / footage's >= 0.8;
frame-to-frame change / footage's <= 1.3; opening motion in pauses of 0.8 s or more / in speech
<= 0.3; P/B/M closed share (bilabials whose smallest opening is at most 0.05 of the eye distance:
higher is better) >= 0.8; phone correlation at lag 0 >= 0.3; identity distance of the dubbed
frame to its footage frame (dlib 128-d, 24 frames), worst < 0.45; outside-mask PSNR (QC's
``outside_psnr_min``) >= 38 dB. Prints a markdown table, writes ``DIR/dub_quality.json`` and a
frame strip per case (``DIR/strips/<case>.png``: footage above, each mode's dub below).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, not benchmarks/pipeline.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fixtalk.measure import mouth_quality as mq  # noqa: E402
from fixtalk.measure.faces import box_from_landmarks  # noqa: E402
from fixtalk.measure.phone_sync import Phone  # noqa: E402
from fixtalk.measure.speech_pauses import speech_activity  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "real"
SR = mq.SAMPLE_RATE
PAUSE_S = 2.0
ID_FRAMES, STRIP_FRAMES = 24, 4


@dataclass(frozen=True)
class Case:
    footage: str
    speech: str
    offset_s: float = 0.0  # where in the speech file the cut starts
    pause: bool = False


CASES = {
    "kitchen": Case("presenter_kitchen.mp4", "presenter_kitchen_new_speech.wav"),
    "kitchen_pause": Case("presenter_kitchen.mp4", "presenter_kitchen_new_speech.wav", pause=True),
    "red": Case("presenter_red.mp4", "english_speech_60s.wav"),
    "red_pause": Case("presenter_red.mp4", "english_speech_60s.wav", pause=True),
    "720p_a": Case("presenter_720p_a.mp4", "english_speech_60s.wav", 23.0),
    "720p_b": Case("presenter_720p_b.mp4", "english_speech_60s.wav", 36.0),
}
#: (key, column title, target as (">=" | "<=" | "<", limit), format)
COLUMNS = [("motion_ratio", "opening std / own", (">=", 0.8), ".2f"),
           ("sharpness_ratio", "sharpness / own", (">=", 0.8), ".2f"),
           ("change_ratio", "change / own", ("<=", 1.3), ".2f"),
           ("pause_motion_ratio", "pause / speech motion", ("<=", 0.3), ".2f"),
           ("pbm_closed_share", "P/B/M closed", (">=", 0.8), ".2f"),
           ("phone_corr", "phone r", (">=", 0.3), ".2f"),
           ("identity_max", "identity max", ("<", 0.45), ".2f"),
           ("outside_psnr_min", "outside dB", (">=", 38.0), ".1f")]


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, data: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_plain(data), indent=1, allow_nan=False))
    tmp.replace(path)
    return data


def _plain(v):
    """``v`` for strict JSON: numpy scalars as Python ones, NaN / inf as null."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ----------------------------------------------------------------------------- inputs
def make_speech(name: str, case: Case, out: Path, seconds: float | None) -> Path:
    """The case's 16 kHz speech: cut to the footage's length (``seconds`` at most), with a
    2-s silence at the quietest 20 ms near the middle for pause cases."""
    from stages.media.av import media_duration, probe

    path = out / "inputs" / f"{name}.wav"
    if path.is_file():
        return path
    wave, sr = sf.read(REAL / case.speech, dtype="float32")
    assert sr == SR and wave.ndim == 1, (case.speech, sr, wave.shape)
    length = media_duration(probe(REAL / case.footage), "video")
    length = min(length, seconds or length, len(wave) / SR - case.offset_s)
    wave = wave[int(case.offset_s * SR):][: int((length - (PAUSE_S if case.pause else 0)) * SR)]
    if case.pause:
        hop = SR // 50
        mid, reach = len(wave) // hop // 2, int(1.5 * 50)
        rms = [float(np.sqrt(np.mean(wave[k * hop:(k + 1) * hop] ** 2)))
               for k in range(mid - reach, mid + reach)]
        at = (mid - reach + int(np.argmin(rms))) * hop
        wave = np.concatenate([wave[:at], np.zeros(int(PAUSE_S * SR), np.float32), wave[at:]])
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, SR)
    return path


def phones_of(audio: np.ndarray, cache: Path) -> list[Phone]:
    """Phones of ``audio``: what pocketsphinx hears, force-aligned, words below the align stage's
    confidence left out (:func:`stages.transcript.heard_phones.heard_phones`, as a memory dub
    without a script closes its lips on them: so P/B/M closure here is measured against the
    phones the dub was given, and phone correlation against recognised, not true, phones)."""
    if not cache.is_file():
        from stages.config import AlignConfig
        from stages.transcript.heard_phones import heard_phones

        words, phones = heard_phones(audio, AlignConfig().pocketsphinx_min_word_confidence)
        _write_json(cache, {"transcript": " ".join(words),
                            "phones": [{"phone": p.name, "start": p.start, "end": p.end} for p in phones]})
    return [Phone(p["phone"], p["start"], p["end"]) for p in _read_json(cache)["phones"]]


# ----------------------------------------------------------------------------- the dub
def run_dub(name: str, mode: str, wav: Path, case: Case, out: Path, sets: list[str]) -> dict:
    """The results row of ``fixtalk run`` on the case (cached in DIR/cases)."""
    from pipeline.cli import main as cli

    cache = out / "cases" / f"{name}-{mode}.run.json"
    if (done := _read_json(cache)) is not None:
        return done
    clip = f"{name}-{mode}"
    manifest = out / "manifests" / f"{clip}.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"clip_id": clip, "source_video": str(REAL / case.footage), "audio": str(wav)}]
                 ).to_csv(manifest, index=False)
    t0 = time.perf_counter()
    code = cli(["run", str(manifest), "--out", str(out / "runs"), "--set", f"dub.mouth={mode}",
                "--set", "run.engine=local", "--set", "provenance.enabled=false",
                *[a for s in sets for a in ("--set", s)]])
    wall = time.perf_counter() - t0
    row = pd.read_parquet(out / "runs" / "results.parquet").set_index("clip_id").loc[clip]
    if row["status"] != "ok":
        raise SystemExit(f"{clip}: fixtalk run exit {code}, {row.get('error_message')}")
    data = {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
            for k, v in row.items() if np.isscalar(v) or v is None}
    return _write_json(cache, {**data, "wall_s": round(wall, 1), "exit_code": code})


def _track(run: dict):
    from stages.face.track import FaceTrack

    track = FaceTrack.load(run["footage_track"])
    use = track.usable & mq.steady(track.landmarks)
    return track, use, mq.mouth_box(track.landmarks[track.usable])


def _frames(chunks, keep=(), kept=None):
    """Frames of ``chunks`` one by one, copies of the indices in ``keep`` into ``kept``."""
    j = 0
    for chunk in chunks:
        for frame in chunk:
            if j in keep:
                kept[j] = frame.copy()
            yield frame
            j += 1


def measure_footage(run: dict, out: Path) -> dict:
    """The footage's own figures (once per footage)."""
    from stages.media.av import decode_audio, first_stream, probe
    from stages.media.footage import footage_frames

    name = Path(run["source_video"]).stem
    cache = out / "cases" / f"footage-{name}.json"
    if (done := _read_json(cache)) is not None:
        return done
    track, use, box = _track(run)
    has_audio = first_stream(probe(run["source_video"]), "audio") is not None
    audio = decode_audio(run["source_video"], SR) if has_audio else None
    m = mq.measure_mouth(_frames(footage_frames(run["source_video"], run["source_rate"])), None, box,
                         align=track.landmarks, jitter=True)
    phones = phones_of(audio, out / "inputs" / f"footage-{name}.phones.json") if audio is not None else None
    figures = mq.clip_figures(m, track.fps, samples=audio, phones=phones, use=use)
    return _write_json(cache, {**figures, "has_audio": audio is not None, "usable_frames": int(use.sum())})


def measure_dub(name: str, mode: str, run: dict, wav: Path, own: dict, out: Path) -> dict:
    """The dub's figures, its ratios to the footage's own and the identity distances."""
    from stages.media.av import iter_video_frames
    from stages.media.footage import read_frames

    cache = out / "cases" / f"{name}-{mode}.json"
    if (done := _read_json(cache)) is not None:
        return done
    track, steady, box = _track(run)
    with np.load(run["dub_frames"]) as rec:
        index, dubbed = rec["footage_index"], rec["dubbed"]
    audio, _ = sf.read(wav, dtype="float32")
    use = dubbed & steady[index]
    speech = use & speech_activity(audio, SR, track.fps, len(index), min_pause_s=mq.SPEECH_PAUSE_S).speech
    spoken = np.flatnonzero(speech)
    picks = set(spoken[np.linspace(0, spoken.size - 1, min(ID_FRAMES, spoken.size)).astype(int)].tolist())
    kept: dict[int, np.ndarray] = {}
    m = mq.measure_mouth(_frames(iter_video_frames(run["output_path"]), picks, kept), None, box,
                         align=track.landmarks[index], jitter=True)
    phones = phones_of(audio, wav.with_suffix(".phones.json"))
    figures = mq.clip_figures(m, track.fps, samples=audio, phones=phones, use=use)
    sources = read_frames(run["source_video"], run["source_rate"], {int(index[j]) for j in kept})
    ids = [mq.identity_distance(f, sources[int(index[j])][: f.shape[0], : f.shape[1]],
                                track.landmarks[index[j]]) for j, f in sorted(kept.items())]
    np.savez(cache.with_suffix(".npz"), opening=m.opening, speech=speech)
    keys = ("dub_mouth", "outside_psnr_min", "qc_status", "wall_s", "t_adapt", "t_render", "t_qc",
            "mouth_motion_ratio", "mouth_sharpness_ratio", "mouth_change_ratio")
    return _write_json(cache, {**figures, **mq.ratios(figures, own), **{k: run.get(k) for k in keys},
                               "identity_max": max(ids, default=math.nan),
                               "identity_median": float(np.median(ids)) if ids else math.nan,
                               "dub_mouth": run.get("dub_mouth") or "model (no dub_mouth column)"})


# ----------------------------------------------------------------------------- the strip
def strip(name: str, runs: dict[str, dict], out: Path) -> Path | None:
    """Footage frames above, each mode's dubbed frames below, cropped around the face: one frame
    per quarter of the speech, where the first mode's dubbed mouth opens widest."""
    import cv2
    from PIL import Image

    from stages.media.av import iter_video_frames
    from stages.media.footage import read_frames

    first = next(iter(runs))
    with np.load(out / "cases" / f"{name}-{first}.npz") as rec:
        opening, speech = rec["opening"], rec["speech"]
    spoken = np.flatnonzero(speech & np.isfinite(opening))
    if spoken.size < STRIP_FRAMES:
        return None
    js = [int(q[np.argmax(opening[q])]) for q in np.array_split(spoken, STRIP_FRAMES)]
    track, _, _ = _track(runs[first])
    with np.load(runs[first]["dub_frames"]) as rec:
        index = rec["footage_index"]
    src = read_frames(runs[first]["source_video"], runs[first]["source_rate"], {int(index[j]) for j in js})
    rows = [[src[int(index[j])] for j in js]]
    for run in runs.values():
        kept: dict[int, np.ndarray] = {}
        for _ in _frames(iter_video_frames(run["output_path"]), set(js), kept):
            pass
        rows.append([kept[j] for j in js])

    def crop(frame, j):
        x0, y0, x1, y1 = box_from_landmarks(track.landmarks[index[j]], scale=1.3, dy=0.1)
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        return cv2.resize(frame[y0:int(y1), x0:int(x1)], (192, 192), interpolation=cv2.INTER_AREA)

    image = np.concatenate([np.concatenate([crop(f, j) for f, j in zip(row, js)], 1) for row in rows], 0)
    path = out / "strips" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


# ----------------------------------------------------------------------------- the table
def _cell(value, target, fmt) -> str:
    if not _finite(value):
        return "n/a"
    op, limit = target
    met = value >= limit if op == ">=" else value <= limit if op == "<=" else value < limit
    return f"{value:{fmt}} {'✓' if met else '✗'}"


def table(figures: dict, footage: dict) -> str:
    head = ["case", "mode (used)", *[f"{t} ({op} {lim:g})" for _, t, (op, lim), _ in COLUMNS], "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, f in figures.items():
        case, mode = key.rsplit("-", 1)
        cells = [_cell(f.get(k), target, fmt) for k, _, target, fmt in COLUMNS]
        lines.append(f"| {case} | {mode} ({f.get('dub_mouth')}) | " + " | ".join(cells)
                     + f" | {f.get('wall_s')} |")
    lines.append("")
    lines.append("| footage (own) | opening std in speech | sharpness | change | pause / speech | "
                 "P/B/M closed | phone r |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, f in footage.items():
        vals = [f.get(k) for k in ("opening_std_speech", "sharpness_median", "change_median",
                                   "pause_motion_ratio", "pbm_closed_share", "phone_corr")]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3g}" if _finite(v) else "n/a" for v in vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--modes", default="model,memory")
    ap.add_argument("--out", default="/tmp/fixtalk_dub_quality")
    ap.add_argument("--seconds", type=float, default=None, help="cut every speech to this length")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="pipeline override")
    ap.add_argument("--remeasure", action="store_true", help="measure again (the dubs are kept)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    if args.remeasure:
        for path in (out / "cases").glob("*.json"):
            if not path.name.endswith(".run.json"):
                path.unlink()
    figures, footage = {}, {}
    for name in args.cases.split(","):
        case = CASES[name]
        wav = make_speech(name, case, out, args.seconds)
        runs = {}
        for mode in args.modes.split(","):
            runs[mode] = run_dub(name, mode, wav, case, out, args.sets)
            own = footage[Path(case.footage).stem] = measure_footage(runs[mode], out)
            figures[f"{name}-{mode}"] = measure_dub(name, mode, runs[mode], wav, own, out)
            print(f"{name} {mode}: " + ", ".join(f"{k} {v:.3g}" for k, v in figures[f"{name}-{mode}"].items()
                                                 if _finite(v)), flush=True)
        strip(name, runs, out)
    _write_json(out / "dub_quality.json", {"figures": figures, "footage": footage})
    print(table(figures, footage))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
