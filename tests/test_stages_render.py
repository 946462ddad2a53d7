"""motion -> render -> mux with a small random-weight FixTalk checkpoint (64x64) on real media:
the astronaut portrait, espeak-ng speech, a pose video of the moving astronaut. No Ray."""
from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from pipeline.config import PipelineConfig
from stages.face_crop import FaceCropStage
from stages.ingest import IngestStage
from stages.media import FfmpegWriter, probe, video_to_frames
from stages.motion import MotionStage
from stages.mux import MuxStage
from stages.render import RenderStage

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FPS = 25


def small_model(emotions: bool):
    import torch

    from fixtalk.config import Audio2LipConfig
    from fixtalk.model import FixTalk
    from fixtalk.presets import get_preset

    cfg = get_preset("tiny")
    cfg = dataclasses.replace(cfg, name="test-64", size=64, style_dim=64,
                              channels={4: 64, 8: 64, 16: 64, 32: 32, 64: 16},
                              audio2lip=Audio2LipConfig(widths=(8, 16, 32, 32, 64), embed_dim=64))
    cfg.emi.heads, cfg.edi.heads, cfg.edi.slots = 2, 2, 16
    torch.manual_seed(0)
    model = FixTalk(cfg).eval()
    if emotions:
        gen = torch.Generator().manual_seed(1)
        model.emotion_weights = {"happy": torch.randn(cfg.exp_dim, generator=gen),
                                 "neutral": torch.zeros(cfg.exp_dim)}
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from skimage import data

    from fixtalk.checkpoints import save_checkpoint

    d = tmp_path_factory.mktemp("render")
    astro = data.astronaut()
    Image.fromarray(astro).save(d / "astro.png")
    subprocess.run(["espeak-ng", "-w", str(d / "speech.wav"), "Hello there."], check=True)
    # a 12-frame pose video: the astronaut turning and sliding in a 320x320 frame
    frames = []
    for i in range(12):
        turn = cv2.getRotationMatrix2D((256, 200), 2.0 * i - 10, 0.62)
        turn[:, 2] += (-100 + 3 * i, -40)
        frames.append(cv2.warpAffine(astro, turn, (320, 320), borderMode=cv2.BORDER_REPLICATE))
    with FfmpegWriter(d / "pose.mp4", 320, 320, fps=FPS, crf=12, preset="ultrafast") as w:
        w.write(np.stack(frames))
    ckpt = save_checkpoint(d / "small.pt", small_model(emotions=True))
    plain = save_checkpoint(d / "plain.pt", small_model(emotions=False))
    cfg = PipelineConfig()
    cfg.model.checkpoint, cfg.model.device = str(ckpt), "auto"
    cfg.render.batch_size, cfg.mux.preset = 8, "ultrafast"
    return {"dir": d, "cfg": cfg, "plain": plain}


def make_row(out: Path, clip_id: str, d: Path, **extra) -> dict:
    row = {"clip_id": clip_id, "portrait": str(d / "astro.png"), "audio": str(d / "speech.wav"),
           "script": "Hello there.", "pose_video": None, "expression_video": None,
           "emotion": None, "emotion_intensity": None, "presenter_id": None, "row_index": 0,
           "out_dir": str(out), "work_dir": str(out / "work" / clip_id), "status": None}
    row.update(extra)
    return row


def test_motion_render_mux_full_frame_with_pose_video_and_emotion(setup, tmp_path):
    d, cfg = setup["dir"], setup["cfg"]
    row = make_row(tmp_path, "full", d, pose_video=str(d / "pose.mp4"), emotion="happy",
                   emotion_intensity=0.5)
    for stage in (IngestStage, FaceCropStage, MotionStage, RenderStage, MuxStage):
        row = stage(cfg).run_row(row)
        assert row["status"] == "ok", (stage.name, row["error_message"])
    samples = len(sf.read(row["audio_16k"])[0])
    frames = samples // 640
    motion = np.load(row["motion_path"])
    assert motion["alpha_lip"].shape == (frames, 20) and row["frames"] == frames
    pose = motion["alpha_pose"]
    assert pose.shape == (frames, 6) and frames > 23
    # 12 pose frames played forward then back: 0..11, 10..0, 1..
    assert np.allclose(pose[22], pose[0]) and np.allclose(pose[13], pose[9])
    assert not np.allclose(pose[0], pose[11])
    from fixtalk.checkpoints import load_model

    happy = load_model(cfg.model.checkpoint).emotion_weights["happy"].numpy()
    assert np.allclose(motion["alpha_exp"], 0.5 * happy[None], atol=1e-6)
    assert (row["pose_source"], row["expression_source"]) == ("pose_video", "emotion:happy")

    video = video_to_frames(row["video_path"], fps=None)
    assert video.shape == (frames, 512, 512, 3)
    portrait = np.asarray(Image.open(row["portrait_image"]))
    # outside the pasted face the picture is the portrait (up to H.264 loss); inside it moves
    assert np.abs(video[:, 480:, :60].astype(int) - portrait[480:, :60].astype(int)).mean() < 6
    assert video[:, 150:200, 200:260].std(axis=0).mean() > 1.0

    out = Path(row["output_path"])
    streams = {s["codec_type"]: s for s in probe(out)["streams"]}
    assert (streams["video"]["codec_name"], streams["video"]["pix_fmt"]) == ("h264", "yuv420p")
    assert (streams["audio"]["codec_name"], streams["audio"]["sample_rate"]) == ("aac", "48000")
    assert abs(float(streams["video"]["duration"]) - row["audio_duration_s"]) <= 1 / FPS + 1e-3
    assert row["checkpoint_id"] and row["render_device"] == "cpu"


def test_render_crop_output_and_own_pose(setup, tmp_path):
    d, cfg = setup["dir"], dataclasses.replace(setup["cfg"])
    cfg.render = dataclasses.replace(cfg.render, output="crop")
    row = make_row(tmp_path, "crop", d)
    for stage in (IngestStage, FaceCropStage, MotionStage, RenderStage):
        row = stage(cfg).run_row(row)
        assert row["status"] == "ok", (stage.name, row["error_message"])
    motion = np.load(row["motion_path"])
    assert "alpha_exp" not in motion and row["pose_source"] == "portrait"
    assert np.allclose(motion["alpha_pose"], motion["alpha_pose"][:1])  # held
    stream = probe(row["video_path"])["streams"][0]
    assert (stream["width"], stream["height"], int(stream["nb_frames"])) == (64, 64, row["frames"])


@pytest.mark.parametrize("checkpoint, emotion, expect, kind", [
    ("small", "bored", "unknown emotion 'bored'; expected one of happy, neutral", "UnknownEmotion"),
    ("plain", "happy", "the model has no emotion weights", "NoEmotionModel")])
def test_motion_rejects_unusable_emotion_naming_the_field(setup, tmp_path, checkpoint, emotion,
                                                          expect, kind):
    d, cfg = setup["dir"], dataclasses.replace(setup["cfg"])
    if checkpoint == "plain":
        cfg.model = dataclasses.replace(cfg.model, checkpoint=str(setup["plain"]))
    row = make_row(tmp_path, "emo", d, emotion=emotion)
    for stage in (IngestStage, FaceCropStage, MotionStage):
        row = stage(cfg).run_row(row)
    assert row["status"] == "failed" and row["error_stage"] == "motion"
    assert row["error_type"] == kind and row["error_message"].startswith(f"emotion: {expect}")
