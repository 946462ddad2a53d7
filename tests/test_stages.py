"""The media stages on real media made here (skimage's astronaut, espeak-ng speech, real ffmpeg),
each stage object called directly, without Ray."""
from __future__ import annotations

import json
import os
import struct
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
from stages.media import FfmpegWriter, MediaError, decode_audio, probe, video_to_frames
from stages.mux import MuxStage

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FPS = 25


# --------------------------------------------------------------------------- media fixtures
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    d = tmp_path_factory.mktemp("media")
    astro = data.astronaut()
    paths = {name: d / f"{name}.png" for name in ("astro", "rotated", "gray", "two", "noise")}
    Image.fromarray(astro).save(paths["astro"])
    canvas = np.full((1200, 1600, 3), 190, np.uint8)  # off-centre, turned 30 degrees
    turn = cv2.getRotationMatrix2D((256, 256), 30, 1.0)
    canvas[620:1132, 1010:1522] = cv2.warpAffine(astro, turn, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    Image.fromarray(canvas).save(paths["rotated"])
    Image.fromarray(astro).convert("L").save(paths["gray"])
    two = np.full((600, 1000, 3), 128, np.uint8)
    two[:512, :512] = astro
    two[50:450, 560:960] = cv2.resize(astro[:, ::-1], (400, 400), interpolation=cv2.INTER_AREA)
    Image.fromarray(two).save(paths["two"])
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    Image.fromarray(noise).save(paths["noise"])
    # a JPEG stored sideways with EXIF orientation 6 (display = rotate 90 degrees clockwise)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(astro[:300, :200], 1))).save(
        d / "exif.jpg", exif=exif.tobytes())
    rgba = np.dstack([astro, np.full(astro.shape[:2], 255, np.uint8)])
    rgba[:50, :50, 3] = 0
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    paths["exif"], paths["rgba"] = d / "exif.jpg", d / "rgba.png"

    paths["speech"] = d / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(paths["speech"]),
                    "Hello. This short sentence drives the talking head."], check=True)
    paths["empty"] = d / "empty.wav"
    sf.write(paths["empty"], np.zeros(0, np.float32), 16000)
    paths["silent"] = d / "silent.wav"
    sf.write(paths["silent"], np.zeros(16000, np.float32), 16000)
    paths["corrupt"] = d / "corrupt.wav"
    paths["corrupt"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + os.urandom(2000))
    return paths


@pytest.fixture(scope="module")
def config() -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.face_crop.size = 128  # no checkpoint needed for these stages
    cfg.mux.preset = "ultrafast"
    return cfg


def make_row(out: Path, clip_id: str, portrait: Path | None, audio: Path | None, **extra) -> dict:
    row = {"clip_id": clip_id, "portrait": str(portrait) if portrait else None,
           "audio": str(audio) if audio else None, "script": None, "pose_video": None,
           "expression_video": None, "emotion": None, "emotion_intensity": None,
           "presenter_id": None, "row_index": 0, "out_dir": str(out),
           "work_dir": str(out / "work" / clip_id), "status": None}
    row.update(extra)
    return row


def write_video(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    with FfmpegWriter(path, frames.shape[2], frames.shape[1], fps=fps, preset="ultrafast") as w:
        w.write(frames)


def moving_square(n: int, h: int = 96, w: int = 96) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        x = 4 + (i * 3) % (w - 24)
        frames[i, 30:50, x:x + 20] = (250, 40, 40)
    return frames


# --------------------------------------------------------------------------- media helpers
def test_probe_decode_and_writer_roundtrip(media, tmp_path):
    info = probe(media["speech"])
    wave = decode_audio(media["speech"], 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) / 16000 - float(info["format"]["duration"])) < 0.05
    assert np.abs(wave).max() > 0.05
    with pytest.raises(MediaError, match="not a readable media file"):
        probe(media["corrupt"])

    frames = moving_square(10, 49, 65)  # odd sides -> cropped to even
    write_video(tmp_path / "odd.mp4", frames)
    stream = probe(tmp_path / "odd.mp4")["streams"][0]
    assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
    assert (stream["width"], stream["height"], int(stream["nb_frames"])) == (64, 48, 10)
    back = video_to_frames(tmp_path / "odd.mp4", fps=None)
    assert back.shape == (10, 48, 64, 3)
    assert np.abs(back[3, 35:45].astype(int) - frames[3, 35:45, :64].astype(int)).mean() < 12


# --------------------------------------------------------------------------- ingest
def test_ingest_normalises_audio_portrait_and_driving_video(media, config, tmp_path):
    pose = tmp_path / "pose10fps.mp4"
    write_video(pose, moving_square(20), fps=10)  # 2 s at 10 fps
    row = make_row(tmp_path, "ok", media["exif"], media["speech"], pose_video=str(pose))
    res = IngestStage(config).run_row(row)
    assert res["status"] == "ok", res["error_message"]
    wav, sr = sf.read(res["audio_16k"])
    assert sr == 16000 and wav.ndim == 1
    assert abs(len(wav) / sr - float(probe(media["speech"])["format"]["duration"])) < 0.05
    assert res["audio_frames"] == len(wav) * FPS // 16000
    # the EXIF orientation is applied: the sideways 200x300 pixels display as 200 wide, 300 high
    assert (res["portrait_width"], res["portrait_height"]) == (200, 300)
    shown = np.asarray(Image.open(res["portrait_image"]))
    assert np.abs(shown.astype(int) - np.asarray(Image.open(media["astro"]))[:300, :200]).mean() < 12
    pose_info = probe(res["pose_video_25"])["streams"][0]
    assert pose_info["avg_frame_rate"] == "25/1" and res["pose_video_frames"] == 50
    assert res["pose_video_src_fps"] == 10.0 and res["expression_video_25"] is None


def test_ingest_rgba_portrait_on_white_and_shared_by_content(media, config, tmp_path):
    stage = IngestStage(config)
    a = stage.run_row(make_row(tmp_path, "a", media["rgba"], media["speech"]))
    b = stage.run_row(make_row(tmp_path, "b", media["rgba"], media["speech"]))
    assert a["status"] == b["status"] == "ok"
    assert a["portrait_image"] == b["portrait_image"]  # one file per picture content
    rgb = np.asarray(Image.open(a["portrait_image"]))
    assert rgb.shape == (512, 512, 3) and (rgb[:50, :50] == 255).all()


@pytest.mark.parametrize("audio, expect", [
    ("empty", "no audio samples"), ("corrupt", "not a readable media file"),
    ("silent", "is silent"), (None, "no audio file")])
def test_ingest_rejects_bad_audio_naming_the_field(media, config, tmp_path, audio, expect):
    res = IngestStage(config).run_row(make_row(tmp_path, "bad", media["astro"],
                                               media[audio] if audio else None))
    assert res["status"] == "failed" and res["error_stage"] == "ingest"
    assert res["error_message"].startswith("audio: ") and expect in res["error_message"]


def test_ingest_rejects_unreadable_portrait_and_long_audio(media, config, tmp_path):
    res = IngestStage(config).run_row(make_row(tmp_path, "p", media["corrupt"], media["speech"]))
    assert res["status"] == "failed" and res["error_message"].startswith("portrait: ")
    assert "not a readable image" in res["error_message"]
    short = PipelineConfig()
    short.ingest.max_audio_seconds = 1.0
    res = IngestStage(short).run_row(make_row(tmp_path, "long", media["astro"], media["speech"]))
    assert res["error_type"] == "AudioTooLong" and "ingest.max_audio_seconds" in res["error_message"]


# --------------------------------------------------------------------------- face crop
def eye_centres(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(meta["crop_landmarks"])
    return pts[36:42].mean(0), pts[42:48].mean(0)


def test_face_crop_aligns_plain_rotated_and_gray_portraits(media, config, tmp_path):
    ingest, crop = IngestStage(config), FaceCropStage(config)
    metas = {}
    for name in ("astro", "rotated", "gray"):
        res = crop.run_row(ingest.run_row(make_row(tmp_path, name, media[name], media["speech"])))
        assert res["status"] == "ok", res["error_message"]
        img = np.asarray(Image.open(res["face_crop"]))
        assert img.shape == (128, 128, 3)
        metas[name] = json.loads(Path(res["face_transform"]).read_text())
        matrix = np.asarray(metas[name]["matrix"])
        assert matrix.shape == (2, 3)
        left, right = eye_centres(metas[name])
        assert abs(left[1] - right[1]) < 0.03 * 128, f"{name}: eyes not level in the crop"
        assert 0.2 * 128 < right[0] - left[0] < 0.4 * 128
    # the rotated, off-centre copy lands on the same crop as the original
    for a, b in zip(eye_centres(metas["astro"]), eye_centres(metas["rotated"])):
        assert np.linalg.norm(a - b) < 0.04 * 128
    assert abs(metas["rotated"]["matrix"][0][2]) > 100  # the face sat far from the origin
    assert metas["gray"]["score"] > 0.5


def test_face_crop_is_cached_per_portrait(media, config, tmp_path):
    ingest, crop = IngestStage(config), FaceCropStage(config)
    first = crop.run_row(ingest.run_row(make_row(tmp_path, "c1", media["astro"], media["speech"])))
    second = crop.run_row(ingest.run_row(make_row(tmp_path, "c2", media["astro"], media["speech"])))
    assert first["face_crop"] == second["face_crop"]
    assert (first["face_cached"], second["face_cached"]) == (False, True)
    assert second["t_face_crop"] < first["t_face_crop"]


@pytest.mark.parametrize("name, expect, kind", [
    ("two", "2 faces found", "SeveralFaces"), ("noise", "no face found", "NoFace")])
def test_face_crop_rejects_zero_or_several_faces(media, config, tmp_path, name, expect, kind):
    ingest, crop = IngestStage(config), FaceCropStage(config)
    for clip in ("x1", "x2"):  # the second answer comes from the cache, same message
        res = crop.run_row(ingest.run_row(make_row(tmp_path, clip, media[name], media["speech"])))
        assert res["status"] == "failed" and res["error_stage"] == "face_crop"
        assert res["error_type"] == kind
        assert res["error_message"].startswith("portrait: ") and expect in res["error_message"]


# --------------------------------------------------------------------------- mux
def top_level_atoms(path: Path) -> list[str]:
    names, data = [], path.read_bytes()
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        names.append(kind.decode("latin-1"))
        if size < 8:
            break
        pos += size
    return names


def ffprobe_streams(path: Path) -> dict[str, dict]:
    return {s["codec_type"]: s for s in probe(path)["streams"]}


@pytest.mark.parametrize("frames_share, subtitles, loudness", [
    (1.0, "embedded", -16.0), (0.6, "sidecar", None), (1.0, "burned", None)])
def test_mux_delivers_h264_aac_faststart_matching_audio(media, config, tmp_path, frames_share,
                                                        subtitles, loudness):
    cfg = PipelineConfig()
    cfg.mux.preset, cfg.mux.loudness_lufs, cfg.align.subtitles = "ultrafast", loudness, subtitles
    audio_s = float(probe(media["speech"])["format"]["duration"])
    row = make_row(tmp_path, "m1", media["astro"], media["speech"], audio_duration_s=audio_s)
    work = Path(row["work_dir"])
    work.mkdir(parents=True)
    n = int(audio_s * FPS * frames_share)  # a short video gets its last frame held
    write_video(work / "video.mp4", moving_square(n, 96, 160))
    (work / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:01,500\nHello.\n")
    (work / "subs.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.500\nHello.\n")
    res = MuxStage(cfg).run_row(row)
    assert res["status"] == "ok", res["error_message"]
    out = Path(res["output_path"])
    assert out == tmp_path / "clips" / "m1.mp4"
    streams = ffprobe_streams(out)
    v, a = streams["video"], streams["audio"]
    assert (v["codec_name"], v["pix_fmt"], v["width"] % 2, v["height"] % 2) == ("h264", "yuv420p", 0, 0)
    assert (a["codec_name"], int(a["sample_rate"])) == ("aac", 48000)
    assert abs(float(v["duration"]) - audio_s) <= 1 / FPS + 1e-3
    assert abs(float(a["duration"]) - audio_s) <= 1 / FPS + 1e-3
    assert abs(res["duration_s"] - audio_s) <= 1 / FPS + 1e-3
    atoms = top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat"), atoms
    assert (tmp_path / "clips" / "m1.srt").is_file() and (tmp_path / "clips" / "m1.vtt").is_file()
    assert ("subtitle" in streams) == (subtitles == "embedded")
    if subtitles == "embedded":
        assert streams["subtitle"]["codec_name"] == "mov_text"
    if subtitles == "burned":  # the caption is drawn into the first second only
        shown = video_to_frames(out, fps=None)
        source = video_to_frames(work / "video.mp4", fps=None)
        early = (np.abs(shown[5].astype(int) - source[5].astype(int)).max(-1) > 60).sum()
        late = (np.abs(shown[-3].astype(int) - source[-3].astype(int)).max(-1) > 60).sum()
        assert early > 20 and late == 0, (early, late)
    if loudness is not None:
        from stages.mux import measure_loudness

        got = float(measure_loudness(out, loudness, -1.5, 11.0)["input_i"])
        assert abs(got - loudness) < 1.5, got
    assert not [p for p in (tmp_path / "clips").iterdir() if p.name.startswith(".tmp-")]


def test_mux_fails_the_row_without_a_rendered_video(media, config, tmp_path):
    res = MuxStage(config).run_row(make_row(tmp_path, "none", media["astro"], media["speech"]))
    assert res["status"] == "failed" and res["error_type"] == "MissingVideo"
    assert not (tmp_path / "clips" / "none.mp4").exists()


# --------------------------------------------------------------------------- paste-back, looping
def test_paste_back_inverts_the_crop_transform(media, config, tmp_path):
    from stages.alignment import warp_to_crop
    from stages.face_crop import load_transform
    from stages.render import PasteBack

    res = FaceCropStage(config).run_row(
        IngestStage(config).run_row(make_row(tmp_path, "pb", media["rotated"], media["speech"])))
    matrix, size, (w, h) = load_transform(res["face_transform"])
    portrait = np.asarray(Image.open(res["portrait_image"]))
    assert portrait.shape == (h, w, 3) == (1200, 1600, 3)
    crop = warp_to_crop(portrait, matrix, size)
    paste = PasteBack(portrait, matrix, size, feather=0.12)
    same = paste(np.stack([crop, crop]))
    assert same.shape == (2, 1200, 1600, 3)
    assert np.abs(same[0].astype(int) - portrait.astype(int)).mean() < 1.0  # crop back in place
    black = paste(np.zeros((1, size, size, 3), np.uint8))[0]
    x0, y0, x1, y1 = paste.roi
    assert 1010 <= (x0 + x1) / 2 <= 1522 and 620 <= (y0 + y1) / 2 <= 1132  # at the face
    changed = np.abs(black.astype(int) - portrait.astype(int)).sum(-1) > 30
    assert changed[y0:y1, x0:x1].mean() > 0.3 and not changed[:y0].any() and not changed[y1:].any()
    centre = np.round(np.mean(np.asarray(json.loads(Path(res["face_transform"]).read_text())
                                         ["landmarks"])[27:36], axis=0)).astype(int)
    assert black[centre[1], centre[0]].max() < 10  # the nose is fully replaced, edges feathered


def test_pingpong_index_plays_back_and_forth():
    from stages.motion import pingpong_index

    assert pingpong_index(4, 10).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert pingpong_index(5, 3).tolist() == [0, 1, 2]
    assert pingpong_index(1, 3).tolist() == [0, 0, 0]


def test_face_alignment_backend_without_cached_weights_is_a_clear_systemic_error(monkeypatch,
                                                                                  tmp_path):
    from stages.base import SystemicError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    cfg = PipelineConfig()
    cfg.face_crop.size, cfg.face_crop.backend = 128, "face_alignment"
    with pytest.raises(SystemicError, match="2DFAN4-11f355bf06.pth.tar.*face_crop.backend=dlib"):
        FaceCropStage(cfg)
