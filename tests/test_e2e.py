"""End to end with the real stages, real ffmpeg and real Ray: a manifest of generated media
(the astronaut portrait, espeak-ng speech) with good and bad rows; a rerun; ``kill -9`` of the
driver in the middle of a run, then a rerun.

The model is the shipped default (``fixtalk/weights/default.pt``) when it exists, else the
session's tiny random-weight checkpoint: these tests check the pipeline, not the picture.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pandas as pd
import pytest

from pipeline.ledger import read_ledger
from pipeline.run import RunRequest, run
from tests.conftest import (REPO, astronaut_portrait, make_no_face, make_speech, make_two_faces, save_png,
                            top_level_atoms)

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v ffmpeg && command -v espeak-ng"], capture_output=True).returncode,
    reason="needs ffmpeg and espeak-ng (make install)")

FPS = 25
DEFAULT_MODEL = REPO / "fixtalk" / "weights" / "default.pt"
#: Speed settings only (encoder preset, QC sampling): every default stage runs.
# portrait adaptation is tested through the pipeline in test_adapt.py (its default, auto, would
# not adapt these tests' own checkpoint anyway)
FAST = ["mux.preset=ultrafast", "qc.sample_every=10", "render.batch_size=16", "adapt.enabled=false"]


def ffprobe(path: Path) -> dict:
    res = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format",
                          str(path)], capture_output=True, text=True)
    assert res.returncode == 0, f"{path}: {res.stderr}"
    return json.loads(res.stdout)


def audio_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def visible_files(out: Path) -> list[Path]:
    clips = out / "clips"
    return sorted(p for p in clips.iterdir() if not p.name.startswith(".")) if clips.is_dir() else []


def assert_delivered(path: Path, audio: Path) -> None:
    """H.264 yuv420p + AAC 48 kHz, faststart, video as long as the speech within one frame."""
    info = ffprobe(path)
    streams = {s["codec_type"]: s for s in info["streams"]}
    video, sound = streams["video"], streams["audio"]
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
    assert video["width"] % 2 == 0 and video["height"] % 2 == 0
    assert (sound["codec_name"], sound["sample_rate"]) == ("aac", "48000")
    speech = audio_seconds(audio)
    assert abs(float(video["duration"]) - speech) <= 1.0 / FPS + 1e-3, (path.name, video["duration"], speech)
    # +faststart: the index (moov) precedes the media data (mdat), after the C2PA manifest box
    atoms = top_level_atoms(path)
    assert atoms.index("moov") < atoms.index("mdat"), atoms


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> Path:
    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() else tiny_checkpoint


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("e2e_media")
    save_png(d / "face.png", astronaut_portrait(192))
    make_two_faces(d / "two_faces.png", 160)
    make_no_face(d / "no_face.png", 160)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not image data" * 20)
    make_speech(d / "hello.wav", "Hello there.", speed=190)
    make_speech(d / "short.wav", "Good day.", speed=190)
    with wave.open(str(d / "empty.wav"), "wb") as w:  # a valid WAV header with no samples
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x10\x00\x00WAVEfmt " + os.urandom(3000))
    return d


def write_manifest(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_bad_rows_fail_alone_good_rows_deliver_and_a_rerun_skips_them(ray_session, media, model, tmp_path):
    rows = [
        {"clip_id": "good_hello", "portrait": "face.png", "audio": "hello.wav", "script": "Hello there."},
        {"clip_id": "good_short", "portrait": "face.png", "audio": "short.wav", "script": "Good day."},
        {"clip_id": "missing_file", "portrait": "face.png", "audio": "nowhere.wav", "script": "x"},
        {"clip_id": "unreadable_image", "portrait": "broken.png", "audio": "hello.wav", "script": "x"},
        {"clip_id": "no_face", "portrait": "no_face.png", "audio": "hello.wav", "script": "x"},
        {"clip_id": "two_faces", "portrait": "two_faces.png", "audio": "hello.wav", "script": "x"},
        {"clip_id": "corrupt_audio", "portrait": "face.png", "audio": "corrupt.wav", "script": "x"},
        {"clip_id": "empty_audio", "portrait": "face.png", "audio": "empty.wav", "script": "x"},
        {"clip_id": "good_hello", "portrait": "face.png", "audio": "hello.wav", "script": "dup"},
        {"clip_id": "sub/dir", "portrait": "face.png", "audio": "hello.wav", "script": "x"},
    ]
    manifest = write_manifest(media / "manifest.csv", rows)
    out = tmp_path / "out"
    first = run(RunRequest(manifest, out, overrides=FAST, checkpoint=str(model), tty=False))
    res = first.results
    assert first.exit_code == 3, first.error
    assert list(res["row_index"]) == list(range(2, 12))  # one result row per manifest row, in order
    by_row = res.set_index("row_index")
    # (row, stage, field named in the message, words of the message)
    expected = [
        (4, "manifest", "audio", "file not found"),
        (5, "ingest", "portrait", "broken.png"),
        (6, "face_crop", "portrait", "no face"),
        (7, "face_crop", "portrait", "2 faces"),
        (8, "ingest", "audio", "corrupt.wav"),
        (9, "ingest", "audio", "empty.wav"),
        (10, "manifest", "clip_id", "duplicate of row 2"),
        (11, "manifest", "clip_id", "path separators"),
    ]
    for row_index, stage, field, words in expected:
        row = by_row.loc[row_index]
        message = str(row["error_message"])
        assert row["status"] == "failed", (row_index, row["status"])
        assert row["error_stage"] == stage, (row_index, row["error_stage"], message)
        assert field in message and words.lower() in message.lower(), (row_index, message)
    assert list(res.loc[res["status"] == "ok", "clip_id"]) == ["good_hello", "good_short"]

    delivered = visible_files(out)
    assert [p.name for p in delivered if p.suffix == ".mp4"] == ["good_hello.mp4", "good_short.mp4"]
    assert_delivered(out / "clips" / "good_hello.mp4", media / "hello.wav")
    assert_delivered(out / "clips" / "good_short.mp4", media / "short.wav")
    ok = res[res["status"] == "ok"]
    assert ok["fingerprint"].notna().all() and ok["checkpoint_id"].notna().all()
    assert {f"t_{s}" for s in ("ingest", "face_crop", "motion", "render", "mux")} <= set(res.columns)
    info = json.loads(first.run_json_path.read_text())
    assert info["counts"] == {"ok": 2, "failed": 8, "skipped": 0, "pending": 0, "total": 10}
    on_disk = pd.read_parquet(out / "results.parquet")
    assert list(on_disk["status"]) == list(res["status"])

    mtimes = {p.name: p.stat().st_mtime_ns for p in delivered}
    again = run(RunRequest(manifest, out, overrides=FAST, checkpoint=str(model), tty=False))
    assert again.exit_code == 3 and again.info["rendered_this_run"] == 0
    status = dict(zip(again.results["row_index"], again.results["status"]))
    assert status[2] == status[3] == "skipped" and list(again.results["status"]).count("failed") == 8
    assert {p.name: p.stat().st_mtime_ns for p in visible_files(out)} == mtimes


def _wait_for_ledger(out: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((out / "ledger").glob("part-*.parquet")):
            return
        if proc.poll() is not None:
            pytest.fail(f"the driver ended before recording a clip: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no clip was recorded within the time limit")


def test_kill_9_of_the_driver_then_rerun_completes_without_redoing_finished_clips(ray_session, media, model,
                                                                                    tmp_path):
    ids = [f"clip{i}" for i in range(4)]
    rows = [{"clip_id": c, "portrait": "face.png", "audio": "hello.wav", "script": "Hello there."} for c in ids]
    manifest = write_manifest(media / "kill.csv", rows)
    out = tmp_path / "out"
    gcs = ray_session.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out), "--address", gcs,
           "--checkpoint", str(model)] + [a for s in FAST for a in ("--set", s)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_ledger(out, proc, timeout=1200)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    ledger = read_ledger(out)  # readable after the kill
    finished = set(ledger.loc[ledger["status"] == "ok", "clip_id"])
    assert finished and finished <= set(ids)
    for path in visible_files(out):  # nothing partial is visible
        if path.suffix == ".mp4":
            assert_delivered(path, media / "hello.wav")
    for clip in finished:
        assert (out / "clips" / f"{clip}.mp4").is_file()
    mtimes = {c: (out / "clips" / f"{c}.mp4").stat().st_mtime_ns for c in finished}

    again = run(RunRequest(manifest, out, overrides=FAST, checkpoint=str(model), tty=False))
    assert again.exit_code == 0, again.error
    assert again.info["rendered_this_run"] + again.info["finished_from_receipt"] == len(ids) - len(finished)
    status = dict(zip(again.results["clip_id"], again.results["status"]))
    assert all(status[c] == "skipped" for c in finished) and all(status[c] == "ok" for c in set(ids) - finished)
    assert [p.name for p in visible_files(out) if p.suffix == ".mp4"] == [f"{c}.mp4" for c in ids]
    for c in ids:
        assert_delivered(out / "clips" / f"{c}.mp4", media / "hello.wav")
    assert {c: (out / "clips" / f"{c}.mp4").stat().st_mtime_ns for c in finished} == mtimes
