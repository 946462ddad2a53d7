"""The media stages on real media made here (skimage's astronaut, espeak-ng speech, LibriVox read
speech from pocketsphinx-testdata transcoded by real ffmpeg),
each stage object called directly, without Ray."""
from __future__ import annotations

import json
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
from stages.media.av import FfmpegWriter, MediaError, decode_audio, probe, video_to_frames
from stages.mux import MuxStage
from tests.conftest import top_level_atoms

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FPS = 25


# --------------------------------------------------------------------------- media fixtures
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    d = tmp_path_factory.mktemp("media")
    astro = data.astronaut()
    paths = {name: d / f"{name}.png" for name in ("astro", "rotated")}
    Image.fromarray(astro).save(paths["astro"])
    canvas = np.full((1200, 1600, 3), 190, np.uint8)  # off-centre, turned 30 degrees
    turn = cv2.getRotationMatrix2D((256, 256), 30, 1.0)
    canvas[620:1132, 1010:1522] = cv2.warpAffine(astro, turn, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    Image.fromarray(canvas).save(paths["rotated"])
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
    librivox = sorted(Path("/usr/share/pocketsphinx/test/data/librivox").glob("*.wav"))
    if not librivox:
        pytest.skip("pocketsphinx-testdata (LibriVox read speech) is not installed")
    paths["librivox"] = librivox[0]  # 7.1 s of a real reader, 16 kHz mono
    speech = str(librivox[0])
    transcode = {  # name: ffmpeg output options
        "stereo44k.wav": ["-ac", "2", "-ar", "44100"], "speech.mp3": ["-c:a", "libmp3lame", "-q:a", "4"],
        "speech.m4a": ["-c:a", "aac", "-b:a", "96k"], "speech.ogg": ["-c:a", "libvorbis", "-q:a", "3"],
        "speech8k.wav": ["-ar", "8000"]}
    for name, opts in transcode.items():
        paths[name] = d / name
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", speech, *opts, str(d / name)], check=True)
    paths["video_with_sound.mp4"] = d / "video_with_sound.mp4"  # a video given as the audio
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=64x48:r=25",
                    "-i", speech, "-shortest", "-c:v", "libx264", "-preset", "ultrafast",
                    "-c:a", "aac", str(paths["video_with_sound.mp4"])], check=True)
    paths["video_silent_track"] = d / "no_sound.mp4"
    write_video(paths["video_silent_track"], moving_square(10))
    paths["zero_bytes"] = d / "zero.mp3"
    paths["zero_bytes"].write_bytes(b"")
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


def envelope(wave: np.ndarray, sr: int) -> np.ndarray:
    """RMS per 20 ms: comparable across codecs and sample rates."""
    hop = sr // 50
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop)
    return np.sqrt((frames ** 2).mean(1))


@pytest.mark.parametrize("name", ["librivox", "stereo44k.wav", "speech.mp3", "speech.m4a",
                                  "speech.ogg", "speech8k.wav", "video_with_sound.mp4"])
def test_ingest_accepts_real_speech_in_any_container(media, config, tmp_path, name):
    res = IngestStage(config).run_row(make_row(tmp_path, "a", media["astro"], media[name]))
    assert res["status"] == "ok", res["error_message"]
    wav, sr = sf.read(res["audio_16k"], dtype="float32")
    assert sr == 16000 and wav.ndim == 1
    truth, _ = sf.read(media["librivox"], dtype="float32")
    assert abs(len(wav) - len(truth)) / sr < 0.06, (len(wav) / sr, len(truth) / sr)
    a, b = envelope(wav, sr), envelope(truth, sr)
    n = min(len(a), len(b))
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.95, "decoded speech does not follow the source"
    assert res["audio_duration_s"] == pytest.approx(len(wav) / sr)
    assert res["audio_src_channels"] == (2 if name == "stereo44k.wav" else 1)


@pytest.mark.parametrize("audio, expect", [
    ("empty", "no audio samples"), ("corrupt", "not a readable media file"),
    ("silent", "is silent"), (None, "no audio file"), ("zero_bytes", "is an empty file (0 bytes)"),
    ("video_silent_track", "has no audio stream")])
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
    short.ingest.max_audio_seconds = 3.0
    res = IngestStage(short).run_row(make_row(tmp_path, "long", media["astro"], media["librivox"]))
    assert res["error_type"] == "AudioTooLong" and res["error_message"].startswith("audio: ")
    assert "lasts 7.1 s, longer than the limit ingest.max_audio_seconds=3" in res["error_message"]


# --------------------------------------------------------------------------- mux


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
    from stages.face.alignment import warp_to_crop
    from stages.face_crop import load_transform
    from stages.media.paste import PasteBack

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
