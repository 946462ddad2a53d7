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
from stages.media.av import FfmpegWriter, probe, video_to_frames
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
    # shift stitching: the head motion fitted to the video's landmarks, played back the same way;
    # the astronaut tilts by 2 degrees and slides right by 3 px per frame
    head = motion["head_motion"]
    assert head.shape == (frames, 6) and np.allclose(head[22], head[0])
    assert np.corrcoef(head[:12, 2], np.arange(12))[0, 1] < -0.95  # roll: the eye line turns
    assert np.corrcoef(head[:12, 4], np.arange(12))[0, 1] > 0.95  # tx: the head slides
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


def test_without_shift_stitching_the_encoder_reads_the_pose_videos_own_frames(setup, tmp_path):
    d = setup["dir"]
    cfg = dataclasses.replace(setup["cfg"])
    # the encoder reads the video's own frames only in EDTalk's mode (motion.pose_track.mode)
    cfg.motion = dataclasses.replace(cfg.motion, pose_track=dataclasses.replace(cfg.motion.pose_track,
                                                                                mode="frames"))
    row = make_row(tmp_path, "plain", d, pose_video=str(d / "pose.mp4"))
    for stage in (IngestStage, FaceCropStage):
        row = stage(cfg).run_row(row)
    with np.load(MotionStage(cfg).run_row(dict(row))["motion_path"]) as npz:
        stitched = dict(npz)  # read now: the second run writes the same motion.npz
    cfg.motion = dataclasses.replace(cfg.motion, shift_stitching=dataclasses.replace(
        cfg.motion.shift_stitching, enabled=False))
    plain_row = MotionStage(cfg).run_row(dict(row))
    assert plain_row["status"] == "ok", plain_row["error_message"]
    plain = dict(np.load(plain_row["motion_path"]))
    assert "head_motion" in stitched and "head_motion" not in plain
    # the encoder read other frames: the stitched ones had their heads moved back by the slide
    assert not np.allclose(plain["alpha_pose"], stitched["alpha_pose"], atol=1e-4)
    assert RenderStage(cfg).run_row(plain_row)["status"] == "ok"


def test_a_pose_video_without_a_face_fails_its_row_naming_the_field(setup, tmp_path):
    d, cfg = setup["dir"], setup["cfg"]
    rng = np.random.default_rng(0)
    with FfmpegWriter(tmp_path / "wall.mp4", 160, 160, fps=FPS, crf=12, preset="ultrafast") as w:
        w.write(rng.integers(90, 110, (10, 160, 160, 3), dtype=np.uint8))  # a plain wall, no face
    row = make_row(tmp_path, "wall", d, pose_video=str(tmp_path / "wall.mp4"))
    for stage in (IngestStage, FaceCropStage, MotionStage):
        row = stage(cfg).run_row(row)
    assert row["status"] == "failed" and row["error_stage"] == "motion"
    assert row["error_type"] == "NoFace" and "pose_video" in row["error_message"]
    assert "one face seen from the front" in row["error_message"]


def test_full_frame_of_an_odd_sized_grayscale_portrait(setup, tmp_path):
    """Grace Hopper (glasses, cap), black and white, 511x599: the video is even-sized (510x598),
    stays gray, matches the portrait outside the face, has no seam at the crop's border, and lasts
    as long as the audio within one frame (ffprobe of both streams)."""
    import matplotlib.cbook as cbook

    from stages.face.alignment import transform_points
    from stages.face_crop import load_landmarks, load_transform

    d, cfg = setup["dir"], setup["cfg"]
    src = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("L")
    src.crop((0, 0, 511, 599)).save(tmp_path / "grace_odd_gray.png")
    row = make_row(tmp_path, "gray", d, portrait=str(tmp_path / "grace_odd_gray.png"))
    for stage in (IngestStage, FaceCropStage, MotionStage, RenderStage, MuxStage):
        row = stage(cfg).run_row(row)
        assert row["status"] == "ok", (stage.name, row["error_message"])
    assert row["render_grayscale"] is True
    out = Path(row["output_path"])
    streams = {s["codec_type"]: s for s in probe(out)["streams"]}
    v, a = streams["video"], streams["audio"]
    assert (v["width"], v["height"], v["pix_fmt"]) == (510, 598, "yuv420p")
    assert abs(float(v["duration"]) - float(a["duration"])) <= 1 / FPS + 1e-3
    assert abs(float(a["duration"]) - row["audio_duration_s"]) <= 1 / FPS + 1e-3
    video = video_to_frames(out, fps=None).astype(int)
    assert video.shape[1:] == (598, 510, 3) and len(video) == row["frames"]
    assert (video.max(-1) - video.min(-1)).mean() < 2.0, "a gray portrait gave a tinted video"
    portrait = np.asarray(Image.open(row["portrait_image"])).astype(int)
    matrix, size, _ = load_transform(row["face_transform"])
    inverse = cv2.invertAffineTransform(matrix)
    t = np.linspace(0.25, size - 0.25, 200)  # the crop square's border, as pasted
    ring = np.concatenate([np.stack([t, np.full_like(t, e)], 1) for e in (0.25, size - 0.25)] +
                          [np.stack([np.full_like(t, e), t], 1) for e in (0.25, size - 0.25)])
    xy = np.round(transform_points(inverse, ring)).astype(int)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < 510) & (xy[:, 1] >= 0) & (xy[:, 1] < 598)
    xy = xy[inside]
    assert len(xy) > 300
    seam = np.abs(video[:, xy[:, 1], xy[:, 0]] - portrait[xy[:, 1], xy[:, 0]]).mean()
    assert seam < 3.0, f"the crop's border shows in the video (mean step {seam:.1f})"
    assert row["render_region"] == "mouth"  # no pose video: only the lower face is generated
    mouth = load_landmarks(row["face_transform"])[48:68].mean(0).round().astype(int)
    assert video[:, mouth[1] - 12:mouth[1] + 12, mouth[0] - 20:mouth[0] + 20].std(0).mean() > 0.5


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


def test_held_pose_generates_only_the_lower_face(setup, tmp_path):
    """No pose video, no emotion: paste_region auto -> mouth. The eyes and hair are the portrait's
    own pixels in every frame, the mouth moves; paste_region=face replaces the eyes too."""
    from stages.face_crop import load_landmarks

    d = setup["dir"]
    videos = {}
    for region in ("auto", "face"):
        cfg = dataclasses.replace(setup["cfg"])
        cfg.render = dataclasses.replace(cfg.render, paste_region=region)
        row = make_row(tmp_path / region, "held", d)
        for stage in (IngestStage, FaceCropStage, MotionStage, RenderStage):
            row = stage(cfg).run_row(row)
            assert row["status"] == "ok", (stage.name, row["error_message"])
        assert row["render_region"] == {"auto": "mouth", "face": "face"}[region]
        videos[region] = video_to_frames(row["video_path"], fps=None).astype(int)
    portrait = np.asarray(Image.open(row["portrait_image"])).astype(int)
    lm = load_landmarks(row["face_transform"])
    (ex, ey), (mx, my) = lm[36:48].mean(0).round().astype(int), lm[48:68].mean(0).round().astype(int)
    eyes = (slice(None), slice(ey - 6, ey + 6), slice(ex - 25, ex + 25))
    assert np.abs(videos["auto"][eyes] - portrait[eyes[1:]]).mean() < 4  # H.264 loss only
    assert np.abs(videos["face"][eyes] - portrait[eyes[1:]]).mean() > 10  # the random net's eyes
    assert videos["auto"][:, my - 12:my + 12, mx - 20:mx + 20].std(0).mean() > 0.5


def test_lower_face_mask_and_colour_fit():
    from skimage import data

    from fixtalk.measure.faces import detect_faces
    from stages.media.paste import fit_colour, lower_face_mask

    astro = data.astronaut()  # 512 x 512, taken as the "crop"
    lm = detect_faces(astro)[0].landmarks
    mask = lower_face_mask(lm, 512)
    at = lambda p: mask[int(round(p[1])), int(round(p[0]))]  # noqa: E731
    assert at(lm[48:68].mean(0)) > 0.99 and at(lm[8] + [0, 5]) > 0.9  # mouth, below the chin
    assert at(lm[36:48].mean(0)) < 0.01 and at(lm[19]) == 0  # eyes, brows
    shifted = np.clip(astro * np.array([0.8, 1.0, 1.1]) + [20, -5, 0], 0, 255).astype(np.uint8)
    gain, offset = fit_colour(shifted, astro, mask)
    back = np.clip(shifted * gain + offset, 0, 255)
    keep = mask > 0.5
    assert np.abs(back[keep] - astro[keep]).mean() < 2.0 < np.abs(shifted[keep].astype(int) - astro[keep]).mean()


def test_motion_emotion_policy_input_errors_fail_missing_weights_warn(setup, tmp_path):
    """Unknown labels and bad intensities fail the row naming the field; a valid emotion that the
    model cannot render (the shipped default has no emotion weights) renders neutral with a
    warning naming the field and the fix."""
    d, cfg = setup["dir"], dataclasses.replace(setup["cfg"])
    base = make_row(tmp_path, "emo", d)
    for stage in (IngestStage, FaceCropStage):
        base = stage(cfg).run_row(base)
    assert base["status"] == "ok", base["error_message"]
    small = MotionStage(cfg)
    plain_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                                   checkpoint=str(setup["plain"])))
    plain = MotionStage(plain_cfg)

    def run(stage, **extra):
        return stage.run_row({**base, **extra})

    bad = run(small, emotion="bored")
    assert (bad["status"], bad["error_stage"], bad["error_type"]) == ("failed", "motion", "UnknownEmotion")
    assert bad["error_message"].startswith("emotion: unknown emotion 'bored'; expected one of angry, ")
    for value in (5.0, "strong", float("nan"), -0.5):
        bad = run(small, emotion="happy", emotion_intensity=value)
        if value != value:  # NaN is a missing cell: the default intensity applies
            assert bad["status"] == "ok" and bad["emotion_applied"] is True
            continue
        assert bad["status"] == "failed" and bad["error_type"] == "BadIntensity", value
        assert bad["error_message"].startswith("emotion_intensity: ") and "from 0 to 2" in bad["error_message"]

    missing = run(plain, emotion="Happy", warnings="speech: earlier note")
    assert missing["status"] == "ok", missing["error_message"]
    assert missing["emotion_applied"] is False and missing["expression_source"] == "portrait"
    assert "alpha_exp" not in np.load(missing["motion_path"])
    notes = missing["warnings"].split(" | ")
    assert notes[0] == "speech: earlier note" and notes[1].startswith("emotion: 'happy' not applied")
    assert "--checkpoint EDTalk.pt with model.emotions_dir" in notes[1]
    other = run(small, emotion="sad")  # a bank without this label: same policy
    assert other["status"] == "ok" and other["emotion_applied"] is False
    assert "has no weights for 'sad' (it has happy, neutral)" in other["warnings"]
    neutral = run(plain, emotion="neutral")
    assert neutral["status"] == "ok" and neutral["emotion_applied"] is True
    assert neutral["warnings"] is None
    none = run(plain)
    assert none["emotion_applied"] is None and none["expression_source"] == "none"
