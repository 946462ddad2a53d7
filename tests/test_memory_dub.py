"""The memory dub (``dub.mouth``) on real footage: a real presenter (``../shared/real/``, the
vertical kitchen clip, cut and scaled here) dubbed to other real speech with a pause inserted,
through ``fixtalk run``; and the recall's path rules on small memories."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tests.nets_common import SHARED
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REAL = SHARED / "real"  # ../shared/real beside the checkout (FIXTALK_SHARED overrides)
QUICK = ["--set", "adapt.enabled=false", "--set", "align.enabled=false", "--set", "run.engine=local",
         "--set", "provenance.enabled=false"]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def dubbed(tmp_path_factory):
    """Kitchen footage (7 s, 540x960) dubbed with 2.4 s of its new speech, a 1.6 s pause, 2.4 s
    more; and a still of that footage (the mouth never moves) dubbed with 1.2 s of it."""
    if not (REAL / "presenter_kitchen.mp4").is_file():
        pytest.skip("../shared/real is not here")
    from pipeline.cli import main

    d = tmp_path_factory.mktemp("memory_dub")
    _ffmpeg("-i", str(REAL / "presenter_kitchen.mp4"), "-t", "7", "-vf", "scale=540:960",
            "-c:v", "libx264", "-crf", "16", "-c:a", "aac", str(d / "kitchen.mp4"))
    _ffmpeg("-ss", "3", "-i", str(d / "kitchen.mp4"), "-frames:v", "1", str(d / "still.png"))
    _ffmpeg("-loop", "1", "-i", str(d / "still.png"), "-t", "4", "-r", "25", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", str(d / "still.mp4"))
    wave, sr = sf.read(REAL / "presenter_kitchen_new_speech.wav", dtype="float32")
    a, b = wave[int(1.0 * sr):int(3.4 * sr)], wave[int(5.0 * sr):int(7.4 * sr)]
    pause = (len(a) / sr, len(a) / sr + 1.6)
    sf.write(d / "speech.wav", np.concatenate([a, np.zeros(int(1.6 * sr), np.float32), b]), sr)
    sf.write(d / "short.wav", a[: int(1.2 * sr)], sr)  # the model's fallback renders every frame: keep it short
    rows = [{"clip_id": "memory", "source_video": "kitchen.mp4", "audio": "speech.wav"},
            {"clip_id": "still", "source_video": "still.mp4", "audio": "short.wav"}]
    pd.DataFrame(rows).to_csv(d / "m.csv", index=False)
    main(["run", str(d / "m.csv"), "--out", str(d / "out"), *QUICK])
    res = pd.read_parquet(d / "out" / "results.parquet").set_index("clip_id")
    return {"dir": d, "res": res, "pause": pause}


def _openings(video: Path, track_path: str, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output frame: inner-lip opening over the eye distance (dlib-68, fitted in the track's
    box of the footage frame shown) and the grey mouth box."""
    import cv2

    from fixtalk.measure.faces import box_from_landmarks, fit_landmarks
    from stages.face.mouth_shape import mouth_box, mouth_shape
    from stages.face.track import FaceTrack
    from stages.media.av import iter_video_frames

    track = FaceTrack.load(track_path)
    opens, boxes, j = [], [], 0
    for chunk in iter_video_frames(video):
        for frame in chunk:
            lm = track.landmarks[int(index[min(j, len(index) - 1)])]
            own = fit_landmarks(frame, box_from_landmarks(lm), refits=1)
            opens.append(mouth_shape(own)[0])
            x0, y0, x1, y1 = mouth_box(lm)
            boxes.append(cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float32))
            j += 1
    return np.array(opens), boxes


def test_the_dub_recalls_the_presenters_own_mouth_and_rests_in_the_pause(dubbed):
    res, d = dubbed["res"], dubbed["dir"]
    row = res.loc["memory"]
    assert row.status == "ok", row.error_message
    assert row.dub_mouth == "memory" and "usable frames" in row.dub_mouth_reason
    assert row.memory_frames > 100 and row.memory_build_s > 0
    # the footage's own English speech was heard: its memory frames know what they were saying
    assert row.memory_phones == "heard" and row.memory_phone_frames > 0.2 * row.memory_frames
    index = np.load(row.dub_frames)["footage_index"]
    dub_open, dub_boxes = _openings(d / "out" / "clips" / "memory.mp4", row.footage_track, index)
    own_open, own_boxes = _openings(d / "kitchen.mp4", row.footage_track, np.arange(10 ** 6))
    fps = 25.0
    t = np.arange(len(dub_open)) / fps
    p0, p1 = dubbed["pause"]
    in_pause = (t > p0 + 0.2) & (t < p1 - 0.2)
    speech = (t < p0 - 0.1) | (t > p1 + 0.1)
    # the mouth opens as the presenter's own does (a fifth to a third of it before)
    assert dub_open[speech].std() >= 0.6 * own_open.std(), (dub_open[speech].std(), own_open.std())
    assert dub_open[speech].max() >= np.percentile(own_open, 90)
    # and rests in the pause: closed (near the presenter's closed mouth) and still
    closed = np.percentile(own_open, 10)
    assert np.median(dub_open[in_pause]) <= closed + 0.03
    assert dub_open[in_pause].std() <= 0.35 * dub_open[speech].std()
    # no flicker: the mouth box changes from frame to frame about as much as the footage's own
    change = lambda boxes: np.median([np.abs(a - b).mean() for a, b in zip(boxes[:-1], boxes[1:]) if a.shape == b.shape])  # noqa: E731
    assert change(dub_boxes) <= 1.5 * change(own_boxes)


def test_the_rest_of_the_frame_is_the_footages_own(dubbed):
    from stages.checks.dub_qc import psnr
    from stages.face.mouth_rest import frame_mask
    from stages.face.track import FaceTrack
    from stages.media.av import video_to_frames

    res, d = dubbed["res"], dubbed["dir"]
    row = res.loc["memory"]
    out = video_to_frames(d / "out" / "clips" / "memory.mp4", None)
    src = video_to_frames(d / "kitchen.mp4", None)
    record = np.load(row.dub_frames)
    track = FaceTrack.load(row.footage_track)
    for j in (10, 40, 70):
        i = int(record["footage_index"][j])
        (x0, y0, x1, y1), mask, _ = frame_mask(track.landmarks[i], track.matrices[i], track.size,
                                               out[j].shape, 0.05)
        outside = np.ones(out[j].shape[:2], bool)
        outside[y0:y1, x0:x1] = mask <= 0
        # the memory's mask covers the recalled chin too, so compare outside the crop's footprint
        assert psnr(out[j][outside], src[i][: out[j].shape[0], : out[j].shape[1]][outside]) >= 36.0


def test_footage_with_a_still_mouth_falls_back_to_the_model_and_says_so(dubbed):
    row = dubbed["res"].loc["still"]
    assert row.status == "ok", row.error_message
    assert row.dub_mouth == "model"
    assert "too little talking footage" in row.dub_mouth_reason


def test_the_network_can_reshape_the_recalled_mouth_and_leaves_the_rest_alone(dubbed):
    """``dub.memory.reshape=network`` (deliverable 4's alternative to the warp): the painted frame
    is the generator's source; the run reuses the footage's memory and keeps the outside pixels."""
    import shutil

    from pipeline.cli import main

    d = dubbed["dir"]
    out = d / "out_network"
    for part in ("_memory", "_tracks"):
        shutil.copytree(d / "out" / "work" / part, out / "work" / part)
    pd.DataFrame([{"clip_id": "network", "source_video": "kitchen.mp4", "audio": "short.wav"}]
                 ).to_csv(d / "n.csv", index=False)
    main(["run", str(d / "n.csv"), "--out", str(out), *QUICK, "--set", "dub.mouth=memory",
          "--set", "dub.memory.reshape=network"])
    row = pd.read_parquet(out / "results.parquet").set_index("clip_id").loc["network"]
    assert row.status == "ok", row.error_message
    assert row.dub_mouth == "memory" and row.memory_build_s == dubbed["res"].loc["memory"].memory_build_s
    assert row.frames_dubbed >= 20 and row.outside_psnr_min >= 38.0  # of 30 frames


# -- the path rules, on small memories made here ------------------------------------------------

class _Mem(SimpleNamespace):
    """The arrays of a presenter memory that the recall reads."""

    def __len__(self):
        return len(self.shapes)


def _mem(openings, runs=None) -> _Mem:
    o = np.asarray(openings, np.float32)
    n = len(o)
    return _Mem(shapes=np.stack([o, np.full(n, 0.9), np.full(n, 0.3)], 1).astype(np.float32),
                pose=np.zeros((n, 3), np.float32), sharpness=np.ones(n, np.float32),
                run=np.zeros(n, np.int32) if runs is None else runs, speaking=np.ones(n, bool))


def test_the_path_follows_the_targets_and_plays_the_presenters_runs():
    from stages.config import PresenterMemoryConfig
    from stages.rendering.recall import recall_path

    # a memory of one talking stretch: the mouth opens and closes twice
    openings = np.concatenate([np.linspace(0.0, 0.2, 10), np.linspace(0.2, 0.0, 10)] * 2)
    mem = _mem(openings)
    targets = mem.shapes[10:30].copy()  # asks for exactly frames 10..29
    path = recall_path(mem, targets, np.zeros((20, 3), np.float32), np.zeros(20, bool), PresenterMemoryConfig())
    assert np.abs(mem.shapes[path, 0] - targets[:, 0]).max() < 0.03
    assert (np.diff(path) == 1).mean() >= 0.9  # played as a run, not picked frame by frame


def test_in_a_pause_the_mouth_holds_still_and_detours_are_removed():
    from stages.config import PresenterMemoryConfig
    from stages.rendering.recall import crossfades, recall_path, without_detours

    openings = np.array([0.0, 0.01, 0.0, 0.02, 0.0, 0.01] * 5, np.float32)
    mem = _mem(openings)
    targets = np.repeat(mem.shapes[:1], 12, axis=0)
    path = recall_path(mem, targets, np.zeros((12, 3), np.float32), np.ones(12, bool), PresenterMemoryConfig())
    assert len(set(mem.shapes[path, 0].tolist())) == 1  # a still mouth, not a mouth that moves

    runs = np.array([0] * 10 + [1] * 10, np.int32)
    mem2 = _mem(np.zeros(20, np.float32), runs)
    path2 = np.array([0, 1, 2, 3, 15, 5, 6, 7, 8, 9])  # a one-frame visit to the other run
    clean = without_detours(path2, mem2)
    assert clean.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    closure = np.zeros(10, bool)
    closure[4] = True  # a P/B/M: a short visit to a closed mouth is what it asks for
    assert without_detours(path2, mem2, closure).tolist() == path2.tolist()
    jump = np.array([0, 1, 2, 3, 12, 13, 14, 15, 16, 17])
    fades = crossfades(jump, mem2, 3)
    assert [len(f) for f in fades] == [1, 1, 1, 1, 2, 2, 2, 1, 1, 1]
    assert fades[4][0] == (4, 0.75)  # the old run plays on while it fades out
    assert all(abs(sum(w for _, w in f) - 1.0) < 1e-6 for f in fades)


def test_a_killed_memory_build_resumes_to_the_same_memory(tmp_path):
    """A build killed after a checkpoint continues from it and ends with the memory an
    uninterrupted build makes."""
    if not (REAL / "presenter_kitchen.mp4").is_file():
        pytest.skip("../shared/real is not here")
    _ffmpeg("-i", str(REAL / "presenter_kitchen.mp4"), "-t", "3", "-vf", "scale=360:640", "-an",
            "-c:v", "libx264", "-crf", "16", str(tmp_path / "k.mp4"))
    script = f"""
import sys, os, signal
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from pathlib import Path
from stages.config import PipelineConfig
from stages.face.track import FaceTracker
from stages.face_crop import make_finder
from stages.media.footage import cached_track
import stages.rendering.presenter_memory as pm
cfg = PipelineConfig()
tracker = FaceTracker(make_finder(cfg.face_crop), cfg.dub.track, 128, cfg.face_crop.crop_scale, cfg.face_crop.center_shift)
track_path, _, _ = cached_track({str(tmp_path / 'k.mp4')!r}, "source_video", "25/1", Path({str(tmp_path)!r}), tracker, cfg.dub.track)
pm.CHECKPOINT_EVERY = 20
mode = sys.argv[1]
if mode == "kill":
    original = pm.MemoryBuilder._checkpoint
    def checkpoint_then_die(self, done, arrays):
        original(self, done, arrays)
        if done >= 40:
            os.kill(os.getpid(), signal.SIGKILL)
    pm.MemoryBuilder._checkpoint = checkpoint_then_die
cache = Path({str(tmp_path)!r}) / sys.argv[2]
folder, mem = pm.cached_memory({str(tmp_path / 'k.mp4')!r}, "25/1", track_path, False, cache)
print(len(mem))
"""
    (tmp_path / "build.py").write_text(script)
    killed = subprocess.run([sys.executable, str(tmp_path / "build.py"), "kill", "a"], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    partial = list((tmp_path / "a").glob("*/partial.npz"))
    assert partial and not list((tmp_path / "a").glob("*/memory.json"))
    resumed = subprocess.run([sys.executable, str(tmp_path / "build.py"), "resume", "a"], capture_output=True, text=True)
    clean = subprocess.run([sys.executable, str(tmp_path / "build.py"), "resume", "b"], capture_output=True, text=True)
    assert resumed.returncode == 0 and clean.returncode == 0, resumed.stderr + clean.stderr
    from stages.rendering.presenter_memory import PresenterMemory

    a = PresenterMemory.load(next((tmp_path / "a").glob("*/memory.json")).parent)
    b = PresenterMemory.load(next((tmp_path / "b").glob("*/memory.json")).parent)
    assert len(a) == len(b) > 40
    assert np.array_equal(np.asarray(a.patches), np.asarray(b.patches))
    assert np.allclose(a.shapes, b.shapes) and np.array_equal(a.frames, b.frames)


def test_targets_take_the_presenters_range_and_close_on_pbm_and_in_pauses():
    from fixtalk.measure.phone_sync import Phone
    from stages.rendering.mouth_targets import mouth_targets

    rng = np.random.default_rng(0)
    wide = _mem(rng.uniform(0.0, 0.3, 400))  # a presenter who opens wide
    fps, n = 25.0, 100
    predicted = np.stack([0.02 * np.abs(np.sin(np.arange(n) / 3.0)), np.full(n, 0.5), np.full(n, 0.3)], 1)
    samples = (0.3 * rng.standard_normal(n * 640)).astype(np.float32)
    samples[40 * 640:60 * 640] = 0.0  # 0.8 s of silence
    phones = [Phone("M", 1.0, 1.08)]  # frames 25-27
    t = mouth_targets(wide, predicted.astype(np.float32), 0.9, samples, fps, 0.3, phones)
    speech = ~t.closed
    # the network's small motion is stretched to this presenter's own range, in its own timing
    assert t.shapes[speech, 0].max() > 0.25 and t.shapes[speech, 0].std() > 0.06
    assert np.corrcoef(t.shapes[speech, 0], predicted[speech, 0])[0, 1] > 0.95
    assert t.pause[45:55].all() and not t.pause[:35].any()
    rest = np.percentile(wide.shapes[:, 0], 10)
    assert (t.shapes[t.closed, 0] <= rest).all() and t.closed[25:27].all()


def test_a_recalled_mouth_is_reshaped_to_its_target_opening(tmp_path):
    """:func:`stages.face.mouth_warp.reshape_opening` on a real open mouth (kitchen frame): opened,
    dlib reads a wider gap; closed, a narrower one; the eyes, nose and what lies below the chin
    keep their pixels; and the change is bounded (no gap stretched out of a closed mouth)."""
    if not (REAL / "presenter_kitchen.mp4").is_file():
        pytest.skip("../shared/real is not here")
    import fixtalk.measure.mouth_quality as mq
    from fixtalk.measure.faces import box_from_landmarks, detect_faces, fit_landmarks
    from stages.face.mouth_warp import opening_change, reshape_opening
    from stages.media.av import iter_video_frames

    _ffmpeg("-ss", "8.4", "-i", str(REAL / "presenter_kitchen.mp4"), "-frames:v", "1",
            "-vf", "scale=540:960", str(tmp_path / "open.png"))
    frame = next(iter_video_frames(str(tmp_path / "open.png")))[0]
    face = detect_faces(frame)[0]
    lm = fit_landmarks(frame, face.box, refits=3, jitter=True)
    gap = lambda img: float(np.mean([mq.lip_gap(fit_landmarks(img, box_from_landmarks(lm), refits=3, jitter=True))  # noqa: E731
                                     for _ in range(2)]))
    before = gap(frame)
    assert before > 0.05, f"the chosen frame should show an open mouth (gap {before:.3f})"
    opened = reshape_opening(frame, lm, lm[48:68], 0.04)
    closed = reshape_opening(frame, lm, lm[48:68], -0.04)
    assert gap(opened) > before + 0.01 and gap(closed) < before - 0.01, (gap(opened), before, gap(closed))
    top = int(lm[33, 1]) - 2  # above the nose base: untouched
    bottom = int(lm[8, 1]) + 3  # below the chin: untouched
    for img in (opened, closed):
        assert np.array_equal(img[:top], frame[:top]) and np.array_equal(img[bottom:], frame[bottom:])
    # the bounds: at most the limit, no gap out of a closed mouth, never below rest
    assert opening_change(0.10, 0.20, 0.02, 0.03) == pytest.approx(0.03)
    assert opening_change(0.021, 0.10, 0.02, 0.03) == pytest.approx(0.001)
    assert opening_change(0.10, 0.0, 0.02, 0.03) == pytest.approx(-0.08)


def test_memory_frames_know_the_phones_of_the_footages_own_speech(tmp_path):
    """:func:`stages.rendering.footage_phones.footage_visemes` on real speech (espeak-ng) of known
    words: with its transcript the frames get the visemes of those words where they are said
    (P/B/M on the bilabials), cached; without, what pocketsphinx hears."""
    from stages.rendering.footage_phones import CODES, footage_visemes, frame_visemes
    from tests.conftest import make_speech

    text = "Bob made a big map of the bay by the moon"
    wav = make_speech(tmp_path / "say.wav", text, speed=140)
    fps = 25.0
    seconds = sf.info(str(wav)).duration
    frames = np.arange(int(seconds * fps))
    mem = _Sized(tmp_path, {"has_audio": True, "fps": fps}, frames)
    codes, source = footage_visemes(mem, str(wav), text)
    assert source == "transcript" and len(codes) == len(frames)
    pbm = np.flatnonzero(codes == CODES["PBM"])
    assert len(pbm) >= 4, codes  # b, m, b, m, p, b, b, m: several frames of closed-lip sounds
    assert (codes > 0).mean() > 0.4  # most of the speech is covered
    again, _ = footage_visemes(mem, str(wav), text)  # cached beside the memory
    assert np.array_equal(again, codes) and any(tmp_path.glob("visemes-transcript-*.json"))
    # frame_visemes: the phone spanning each time, 0 outside any
    from fixtalk.measure.phone_sync import Phone

    got = frame_visemes([Phone("M", 0.1, 0.2), Phone("AA", 0.2, 0.4)], np.array([0.05, 0.15, 0.3, 0.5]))
    assert got.tolist() == [0, CODES["PBM"], CODES["AA"], 0]


class _Sized:
    """A memory-like object of ``len(frames)`` frames (what footage_visemes reads)."""

    def __init__(self, folder, meta, frames):
        self.folder, self.meta, self.frames = folder, meta, frames

    def __len__(self):
        return len(self.frames)


def test_the_recall_prefers_mouths_saying_the_asked_sound():
    from stages.config import PresenterMemoryConfig
    from stages.rendering.footage_phones import CODES
    from stages.rendering.recall import recall_path

    # two runs of equally open mouths: the first said AA, the second M (pressed lips)
    mem = _mem([0.05] * 20, runs=np.repeat([0, 1], 10).astype(np.int32))
    mem.visemes = np.repeat([CODES["AA"], CODES["PBM"]], 10).astype(np.int8)
    cfg = PresenterMemoryConfig()
    asked = np.full(6, CODES["PBM"], np.int8)
    path = recall_path(mem, np.tile(mem.shapes[0], (6, 1)), np.zeros((6, 3), np.float32), np.zeros(6, bool),
                       cfg, asked)
    assert (path >= 10).all(), path
    asked[:] = CODES["AA"]
    path = recall_path(mem, np.tile(mem.shapes[0], (6, 1)), np.zeros((6, 3), np.float32), np.zeros(6, bool),
                       cfg, asked)
    assert (path < 10).all(), path
