"""QC of a dub's mouth against its own footage (issue 29, deliverable 6), on real footage: 4 s of
the kitchen presenter (``../shared/real/presenter_kitchen.mp4``, his own speech) as a dub's
``source_video``, and two "dubs" of it made here with the project's own pieces: the footage
unchanged (a dub whose mouth is the presenter's own) and the footage with its lower face frozen
at rest (:func:`stages.face.mouth_rest.rest_mouth` with its most closed frame: a closed mouth that
never moves, the worst a dub can do)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.nets_common import SHARED

REAL = SHARED / "real"  # ../shared/real beside the checkout (FIXTALK_SHARED overrides)
KITCHEN = REAL / "presenter_kitchen.mp4"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def dubs(tmp_path_factory):
    from fixtalk.measure.mouth_quality import lip_gap
    from stages.config import FaceTrackConfig
    from stages.face.alignment import FaceFinder
    from stages.face.mouth_rest import rest_mouth
    from stages.face.track import FaceTracker
    from stages.media.av import FfmpegWriter, iter_video_frames

    if not KITCHEN.is_file():
        pytest.skip("../shared/real/ is not here")
    d = tmp_path_factory.mktemp("mouth_qc")
    footage = d / "footage.mp4"
    _ffmpeg("-ss", "8", "-t", "4", "-i", str(KITCHEN), "-vf", "scale=540:960", "-c:v", "libx264",
            "-crf", "16", "-preset", "veryfast", "-c:a", "aac", str(footage))
    tracker = FaceTracker(FaceFinder("dlib"), FaceTrackConfig(), 128, 1.6, 0.1)
    track = tracker.track(iter_video_frames(footage), 25.0)
    track.save(d / "track.npz")
    n = len(track)
    assert track.usable.mean() > 0.9, track.counts()
    np.savez(d / "dub_frames.npz", footage_index=np.arange(n), dubbed=track.usable)
    shutil.copy(footage, d / "keep.mp4")  # the presenter's own mouth
    # the frame whose lips are closest to closed, frozen over every frame
    ref = min(np.flatnonzero(track.usable), key=lambda i: lip_gap(track.landmarks[i]))
    frames = np.concatenate(list(iter_video_frames(footage)))
    with FfmpegWriter(d / "frozen_video.mp4", track.width, track.height, fps=25, crf=16,
                      preset="veryfast") as writer:
        for i, frame in enumerate(frames):
            if not track.usable[i]:  # passed through, as the dub renderer does
                writer.write(frame)
                continue
            writer.write(rest_mouth(frame, track.landmarks[i], track.matrices[i], frames[ref],
                                    track.landmarks[ref], track.size, 0.05)[0])
    _ffmpeg("-i", str(d / "frozen_video.mp4"), "-i", str(footage), "-map", "0:v", "-map", "1:a",
            "-c:v", "copy", "-c:a", "aac", str(d / "frozen.mp4"))
    row = {"dub_frames": str(d / "dub_frames.npz"), "footage_track": str(d / "track.npz"),
           "source_video": str(footage), "source_rate": "25/1"}
    return d, row


def _metrics(dubs, name: str) -> dict:
    from stages.checks.dub_qc import dub_metrics

    d, row = dubs
    return dub_metrics({**row, "clip_id": name}, d / f"{name}.mp4", d, feather=0.05)


def test_a_dub_with_the_presenters_own_mouth_measures_as_the_footage(dubs):
    from stages.checks.rules import judge
    from stages.config import QCConfig

    m = _metrics(dubs, "keep")
    for key in ("mouth_motion_ratio", "mouth_sharpness_ratio", "mouth_change_ratio"):
        assert 0.9 <= m[key] <= 1.1, (key, m)
    assert m["footage_mouth_open_std"] > 0.05, m  # a real mouth in speech moves 0.06-0.09
    _, reasons = judge(m, QCConfig(), fps=25.0, lufs_target=None)
    assert "mouth_motion_ratio" not in reasons, reasons


def test_a_frozen_mouth_warns_with_what_was_measured_and_what_to_do(dubs):
    """Through the whole QC stage, as a run does."""
    from stages.checks.rules import judge
    from stages.config import PipelineConfig, QCConfig
    from stages.qc import QCStage

    d, row = dubs
    config = PipelineConfig()
    config.qc.sample_every = 25  # identity is not under test
    m = QCStage(config).run_row({**row, "clip_id": "frozen", "output_path": str(d / "frozen.mp4"),
                                 "out_dir": str(d), "status": "ok"})
    assert m["status"] == "ok", m.get("error_message")
    assert m["mouth_motion_ratio"] < 0.3, m
    assert m["mouth_change_ratio"] < 0.6, m  # a mouth that never moves hardly changes
    assert m["outside_psnr_min"] > 30, m
    reason = next(r for r in m["qc_reasons"].split("; ") if "mouth_motion_ratio" in r)
    assert reason.startswith("dub: mouth_motion_ratio") and reason.endswith("(warn)"), reason
    assert "presenter's own mouth" in reason, reason
    assert "dub.mouth=memory" in reason and f"{m['footage_mouth_open_std']:.3f}" in reason, reason
    # a threshold of None turns the check off
    _, reasons = judge(m, QCConfig(mouth_motion_ratio_warn=None), fps=25.0, lufs_target=None)
    assert "mouth_motion_ratio" not in reasons


def test_the_meter_reads_the_footage_as_itself_and_a_frozen_mouth_as_still(dubs):
    """The meter on every frame: the footage against itself gives ratios of 1; the frozen mouth's
    opening hardly varies, and its pause-free speech gives it no motion to speak of."""
    from fixtalk.measure import mouth_quality as mq
    from stages.face.track import FaceTrack
    from stages.media.av import decode_audio, iter_video_frames

    d, row = dubs
    track = FaceTrack.load(row["footage_track"])
    box = mq.mouth_box(track.landmarks)
    audio = decode_audio(row["source_video"], 16000)
    use = track.usable & mq.steady(track.landmarks)
    assert use.mean() > 0.85
    figures = {}
    for name in ("keep", "frozen"):
        frames = (f for chunk in iter_video_frames(d / f"{name}.mp4") for f in chunk)
        m = mq.measure_mouth(frames, None, box, align=track.landmarks)
        figures[name] = mq.clip_figures(m, 25.0, samples=audio, use=use)
    assert figures["keep"]["speech_frames"] > 60
    own = mq.ratios(figures["keep"], figures["keep"])
    assert all(v == pytest.approx(1.0) for v in own.values()), own
    frozen = mq.ratios(figures["frozen"], figures["keep"])
    assert frozen["motion_ratio"] < 0.3 and frozen["change_ratio"] < 0.6, frozen
    assert figures["keep"]["opening_std_speech"] > 0.05, figures
