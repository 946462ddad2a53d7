"""``fixtalk data prepare`` on a folder of real videos, through real Ray (local).

The videos are made here with ffmpeg from the shipped portraits (examples/astronaut.jpg,
examples/grace_hopper.jpg), zoomed and panned a little, with LibriVox speech: a good one (in a
speaker folder, MEAD style), one with a scene cut between two people (two clips), and the ones
the job must drop with their reason: a zero-byte file, a garbage file, an audio-only file, a
video without audio, one without a face (ffmpeg's mandelbrot), one with two faces side by side
and one too short.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fixtalk.config import PrepareConfig
from fixtalk.train.crop import TEMPLATE_POINTS, key_points
from fixtalk.train.data_format import FPS, SAMPLES_PER_FRAME, TalkingFaceDataset, list_clips

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SIZE = 64
ENCODE = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"]
#: what each dropped video must be dropped for, and its footage seconds
DROPPED = {"empty.mp4": ("unreadable", 0.0), "garbage.mov": ("unreadable", 0.0),
           "voice_only.mp4": ("no_video_stream", 2.0), "silent.mp4": ("no_audio", 2.0),
           "no_face.mp4": ("no_face", 2.0), "two_faces.mp4": ("several_faces", 2.0),
           "too_short.mp4": ("too_short", 0.6)}
CLIPS = {"speaker_a__good_000": 75, "cut_000": 50, "cut_001": 50}


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True)


def _speech(k: int) -> str:
    wavs = sorted(LIBRIVOX.glob("*.wav"))
    if not wavs:
        pytest.skip("LibriVox test speech missing (apt-get install pocketsphinx-testdata)")
    return str(wavs[k % len(wavs)])


def make_videos(folder: Path) -> Path:
    """The test folder of videos (see the module docstring); 160 px, 25 fps, 0.6-4 s each."""
    astro, hopper = str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "grace_hopper.jpg")
    zoom_in = "scale=320:320,zoompan=z='1.0+0.002*on':x='iw/2-(iw/zoom/2)+on*0.4':y='ih/2-(ih/zoom/2)':d=1:s=160x160:fps=25"
    zoom_out = "crop=512:512:0:20,scale=320:320,zoompan=z='1.1-0.002*on':d=1:s=160x160:fps=25"
    (folder / "speaker_a").mkdir(parents=True)
    _ffmpeg("-loop", "1", "-i", astro, "-i", _speech(0), "-filter_complex", f"[0]{zoom_in}[v];[1:a]apad[s]",
            "-map", "[v]", "-map", "[s]", "-t", "3", *ENCODE, str(folder / "speaker_a" / "good.mp4"))
    _ffmpeg("-loop", "1", "-i", astro, "-loop", "1", "-i", hopper, "-i", _speech(1), "-filter_complex",
            f"[0]{zoom_in},trim=duration=2[a];[1]{zoom_out},trim=duration=2[b];[a][b]concat=n=2:v=1:a=0[v];"
            "[2:a]apad[s]", "-map", "[v]", "-map", "[s]", "-t", "4", *ENCODE, str(folder / "cut.mp4"))
    _ffmpeg("-loop", "1", "-i", astro, "-loop", "1", "-i", hopper, "-i", _speech(2), "-filter_complex",
            "[0]scale=128:128[a];[1]crop=512:512:0:20,scale=128:128[b];[a][b]hstack,fps=25[v];[2:a]apad[s]",
            "-map", "[v]", "-map", "[s]", "-t", "2", *ENCODE, str(folder / "two_faces.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "mandelbrot=s=160x160:rate=25", "-i", _speech(3), "-filter_complex",
            "[1:a]apad[s]", "-map", "0:v", "-map", "[s]", "-t", "2", *ENCODE, str(folder / "no_face.mp4"))
    _ffmpeg("-loop", "1", "-i", astro, "-i", _speech(4), "-vf", "scale=160:160,fps=25", "-t", "0.6",
            *ENCODE, str(folder / "too_short.mp4"))
    _ffmpeg("-loop", "1", "-i", astro, "-vf", "scale=160:160,fps=25", "-t", "2", *ENCODE[:6],
            str(folder / "silent.mp4"))
    _ffmpeg("-i", _speech(0), "-t", "2", "-c:a", "aac", str(folder / "voice_only.mp4"))
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "garbage.mov").write_bytes(np.random.default_rng(0).bytes(5000))
    return folder


def _cli(*argv: str) -> tuple[int, str]:
    """``fixtalk data prepare ...`` through the console script's dispatcher; (exit code, stdout)."""
    from pipeline.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["data", "prepare", *argv])
    return code, buf.getvalue()


def _mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns
            for p in [*out.glob("*_0*"), *out.glob("*_0*/*"), *(out / "_videos").glob("*.json")]}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return make_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def prepared(ray_session, videos, tmp_path_factory) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("prepared") / "clips"
    code, text = _cli(str(videos), str(out), "--size", str(SIZE))
    return out, code, text


def test_good_and_cut_videos_become_aligned_clips_in_the_training_format(prepared):
    out, code, text = prepared
    assert code == 0, text
    assert {p.name for p in list_clips(out)} == set(CLIPS)
    ds = TalkingFaceDataset(out, window=5)
    template = TEMPLATE_POINTS * SIZE
    for clip in ds.clips:
        n = CLIPS[clip.path.name]
        assert clip.frames.shape == (n, SIZE, SIZE, 3) and clip.landmarks.shape == (n, 68, 2)
        assert len(clip.audio) == n * SAMPLES_PER_FRAME and clip.audio.std() > 0.01  # real speech
        assert clip.meta["fps"] == FPS and clip.meta["kind"] == "video"
        # one fixed crop per clip: the median eyes and mouth sit on the canonical template
        assert np.abs(key_points(np.median(clip.landmarks, 0)) - template).max() < 0.06 * SIZE
    item = ds[0]
    assert item["driving"].shape == (5, 3, SIZE, SIZE) and item["mel"].shape[0] == 5
    cut = {c.path.name: c for c in ds.clips if c.meta["source"] == "cut.mp4"}
    assert [cut["cut_000"].meta["shot"], cut["cut_001"].meta["shot"]] == [0, 1]
    assert cut["cut_000"].meta["segment"] == [0, 50] and cut["cut_001"].meta["segment"] == [50, 100]
    # two different people: the crops' mean colour jumps at the cut, far more than within a shot
    colour = {name: c.frames.reshape(c.num_frames, -1, 3).mean(1) for name, c in cut.items()}
    within = max(np.abs(col[0] - col[-1]).max() for col in colour.values())
    assert np.abs(colour["cut_000"][-1] - colour["cut_001"][0]).max() > 3 * within
    good = next(c for c in ds.clips if c.path.name == "speaker_a__good_000")
    assert good.meta["identity"] == "speaker_a" and good.meta["source"] == "speaker_a/good.mp4"
    assert not (out / ".partial").exists()


def test_summary_names_every_dropped_video_and_the_hours_add_up(prepared, videos):
    out, _, text = prepared
    with (out / "prepare_videos.csv").open() as fh:
        pieces = list(csv.DictReader(fh))
    outcome = {}
    for row in pieces:
        outcome.setdefault(row["source"], set()).add(row["outcome"])
    for name, (reason, _) in DROPPED.items():
        assert outcome[name] == {reason}, (name, outcome[name])
        assert f"{name}: {reason}" in text  # printed
    assert outcome["speaker_a/good.mp4"] == {"kept"} and outcome["cut.mp4"] == {"kept"}
    messages = {row["source"]: row["message"] for row in pieces}
    assert "voice_only.mp4: no video stream" in messages["voice_only.mp4"]
    assert "two or more faces" in messages["two_faces.mp4"] and "crop the video" in messages["two_faces.mp4"]
    with (out / "prepare_summary.csv").open() as fh:
        rows = {r["outcome"]: r for r in csv.DictReader(fh)}
    kept_s = sum(CLIPS.values()) / FPS
    total_s = kept_s + sum(s for _, s in DROPPED.values())
    assert float(rows["kept"]["seconds"]) == pytest.approx(kept_s, abs=0.05)
    assert float(rows["total"]["seconds"]) == pytest.approx(total_s, abs=0.1)
    assert int(rows["total"]["videos"]) == 9 and int(rows["kept"]["pieces"]) == 3
    assert int(rows["unreadable"]["videos"]) == 2
    parts = [r for k, r in rows.items() if k != "total"]
    assert sum(float(r["seconds"]) for r in parts) == pytest.approx(float(rows["total"]["seconds"]), abs=0.02)
    assert sum(float(r["hours"]) for r in parts) == pytest.approx(total_s / 3600, abs=1e-3)
    markdown = (out / "prepare_summary.md").read_text()
    assert all(name in markdown for name in DROPPED) and "| kept | 2 | 3 |" in markdown


def test_rerun_skips_finished_videos_and_redoes_only_a_missing_one(prepared, videos):
    out, _, _ = prepared
    before = _mtimes(out)
    assert len([k for k in before if k.endswith("frames.npy")]) == 3
    code, text = _cli(str(videos), str(out), "--size", str(SIZE))
    assert code == 0 and "0 to prepare, 9 skipped" in text
    assert _mtimes(out) == before
    (out / "_videos" / "cut.json").unlink()  # as if the job had been killed before this record
    code, text = _cli(str(videos), str(out), "--size", str(SIZE))
    assert code == 0 and "1 to prepare, 8 skipped" in text and "cut.mp4: 2 clip(s)" in text
    after = _mtimes(out)
    assert after["speaker_a__good_000/frames.npy"] == before["speaker_a__good_000/frames.npy"]
    assert after["cut_000/frames.npy"] > before["cut_000/frames.npy"]
    assert {p.name for p in list_clips(out)} == set(CLIPS)
    code, text = _cli(str(videos), str(out), "--size", "96")  # other clip settings: refused, named
    assert code == 2


def test_worker_without_ray_writes_atomically_and_ignores_a_killed_runs_leftover(videos, tmp_path):
    from fixtalk.train.prepare import prepare_video
    from fixtalk.train.prepare_job import run_job
    from fixtalk.train.prepare_records import UsageError

    out = tmp_path / "out"
    leftover = out / ".partial" / "good_000"  # a clip a killed job was still writing
    leftover.mkdir(parents=True)
    (leftover / "meta.json").write_text("{}")
    (leftover / "frames.npy").write_bytes(b"half")
    assert list_clips(out) == []
    record = prepare_video(videos / "speaker_a" / "good.mp4", out, PrepareConfig(size=SIZE))
    assert [c["name"] for c in record["clips"]] == ["good_000"] and record["drops"] == []
    assert record["kept_seconds"] == pytest.approx(3.0)
    assert json.loads((out / "_videos" / "good.json").read_text()) == record
    assert np.load(out / "good_000" / "frames.npy").shape == (75, SIZE, SIZE, 3)
    assert not leftover.exists()
    record = prepare_video(videos / "voice_only.mp4", out, PrepareConfig(size=SIZE))
    assert record["clips"] == [] and record["drops"][0]["reason"] == "no_video_stream"
    with pytest.raises(UsageError, match="nowhere is not a folder of videos"):
        run_job(out / "nowhere", out)


def test_clips_are_cut_to_the_face_track_and_every_frame_is_accounted_for():
    from fixtalk.train.clip_plan import plan_pieces
    from fixtalk.train.face_scan import FaceScan

    n = 200  # 8 s, one shot: face 0-3 s, a 0.2 s gap, face to 4 s, no face 4-5 s, face 5-8 s;
    # the audio ends at 7.6 s
    found = np.ones(n, bool)
    found[75:80] = False
    found[100:125] = False
    landmarks = np.where(found[:, None, None], 50.0, np.nan) * np.ones((n, 68, 2))
    scan = FaceScan(landmarks, np.where(np.arange(n) % 5 == 0, 1, -1), np.zeros(n, np.int32))
    cfg = PrepareConfig(segment=2.0, min_seconds=1.0)
    pieces = plan_pieces(scan, audio_frames=190, cfg=cfg)
    spans = [(p.start, p.stop, p.reason) for p in pieces]
    # 2 s clips; the last run's 0.6 s remainder joins its clip; frames past the audio are dropped
    assert spans == [(0, 50, None), (50, 100, None), (100, 125, "no_face"), (125, 190, None),
                     (190, 200, "no_audio")]
    assert pieces[1].missing == pytest.approx(5 / 50)  # the bridged 0.2 s gap
    assert sum(p.stop - p.start for p in pieces) == n
    # a video that outlasts its audio by a frame or two (25 fps rounding) keeps its end
    assert plan_pieces(scan, audio_frames=n - 2, cfg=cfg)[-1].stop == n
    assert plan_pieces(scan, audio_frames=n - 2, cfg=cfg)[-1].reason is None
    scan.faces[::5] = 2  # two people in every checked frame
    assert [p.reason for p in plan_pieces(scan, n, cfg)] == ["several_faces"]
