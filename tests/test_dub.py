"""Dubbing footage (``source_video`` rows) end to end through ``fixtalk run`` (local engine) with
the shipped default model, on footage made here: Grace Hopper's public-domain portrait speaking a
LibriVox sentence (fixtalk.train.talking_footage), dubbed with other LibriVox speech."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf


os.environ.setdefault("HF_HUB_OFFLINE", "1")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
QUICK = ["--set", "adapt.enabled=false", "--set", "align.enabled=false", "--set", "run.engine=local"]


def _speech(name: str) -> np.ndarray:
    from fixtalk.train.speech import resample

    wave, sr = sf.read(LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{name}.wav", dtype="float32")
    return resample(wave, sr)


def _hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    return np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Footage of Grace Hopper saying sentence A (25 fps and 30 fps), speech B with a 1.6 s pause."""
    from fixtalk.train.talking_footage import talking_frames, write_footage

    if not LIBRIVOX.is_dir():
        pytest.skip("pocketsphinx-testdata is not installed (make install)")
    d = tmp_path_factory.mktemp("dub")
    text_a = "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them"
    a = _speech("0870")
    frames, mouth = talking_frames(_hopper(), a, text_a, size=256, fps=25, seed=3)
    write_footage(frames, 25, d / "hopper25.mp4", a)
    frames30, _ = talking_frames(_hopper(), a[: 16000 * 2], text_a[:40].rsplit(" ", 1)[0], size=256, fps=30, seed=4)
    odd = np.ascontiguousarray(frames30[:, :255, :253])
    write_footage(odd, 30, d / "hopper30_odd.mkv")
    b1, b2 = _speech("0880"), _speech("0930")
    pause = np.zeros(int(1.6 * 16000), np.float32)
    sf.write(d / "speech_b.wav", np.concatenate([b1, pause, b2]), 16000)
    sf.write(d / "short.wav", b1[: int(2.4 * 16000)], 16000)
    return {"dir": d, "frames": frames, "mouth": mouth, "pause": (len(b1) / 16000, len(b1) / 16000 + 1.6)}


def _run(d: Path, rows: list[dict], out: str, extra: list[str] = ()) -> pd.DataFrame:
    from pipeline.cli import main

    manifest = d / f"{out}.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    main(["run", str(manifest), "--out", str(d / out), *QUICK, *extra])
    return pd.read_parquet(d / out / "results.parquet").set_index("clip_id")


def _frames(path) -> np.ndarray:
    from stages.media.av import video_to_frames

    return video_to_frames(path, None)


def _mouth_track(frames: np.ndarray) -> np.ndarray:
    from fixtalk.measure.faces import detect_faces, fit_landmarks, mouth_opening

    box, out = None, []
    for f in frames:
        if box is None:
            box = detect_faces(f, 1)[0].box
        lm = fit_landmarks(f, box, jitter=False)
        out.append(mouth_opening(lm))
    return np.array(out)


def test_dub_keeps_the_footage_and_rests_the_mouth_in_the_pause(media):
    d = media["dir"]
    res = _run(d, [{"clip_id": "dub", "source_video": "hopper25.mp4", "audio": "speech_b.wav"}], "out_b")
    row = res.loc["dub"]
    assert row.status == "ok", row.error_message
    speech_s = sf.info(d / "speech_b.wav").duration
    out = _frames(row.output_path)
    assert out.shape[1:3] == (256, 256) and row.fps == 25.0
    assert abs(len(out) - round(speech_s * 25)) <= 1
    assert row.frames_dubbed == len(out) and row.frames_passed_through == 0
    # outside the mouth the picture is the footage's own (up to the H.264 encodings)
    assert row.outside_psnr_min > 34.0, row.outside_psnr_min
    from stages.media.footage import footage_index

    footage = _frames(d / "hopper25.mp4")
    src = footage[footage_index(len(footage), len(out), "pingpong")]
    top = slice(0, 120)  # hat, eyes and flag: never composited
    diff = np.abs(out[:, top].astype(int) - src[:, top].astype(int)).mean()
    assert diff < 3.0, diff
    # in the pause of the new speech the mouth rests while the footage's presenter talks
    a, b = (int(t * 25) + 5 for t in media["pause"])
    b -= 10
    dubbed_mouth = _mouth_track(out[a:b])
    source_mouth = _mouth_track(footage[footage_index(len(footage), len(out), "pingpong")][a:b])
    mad = lambda m: float(np.median(np.abs(m - np.median(m))))  # noqa: E731 - robust to a landmark glitch
    assert mad(source_mouth) > 0.03, source_mouth  # the footage's presenter talks there
    assert mad(dubbed_mouth) < 0.015 and np.median(dubbed_mouth) < 0.06, dubbed_mouth
    # and it moves with the new words before the pause
    spoken = _mouth_track(out[5:a - 10])
    assert np.percentile(spoken, 90) - np.percentile(spoken, 10) > 0.05, spoken
    assert row.qc_status in ("pass", "warn") and "dub:" not in str(row.qc_reasons)


@pytest.mark.parametrize("policy", ["pingpong", "loop", "freeze"])
def test_extend_policies_give_the_speech_length_and_the_right_frames(media, policy):
    from stages.media.footage import footage_index

    d = media["dir"]
    short = d / "short_footage.mp4"
    if not short.exists():  # 1.2 s of footage under 2.4 s of speech
        from fixtalk.train.talking_footage import write_footage

        write_footage(media["frames"][:30], 25, short)
    res = _run(d, [{"clip_id": f"ext_{policy}", "source_video": short.name, "audio": "short.wav"}],
               f"out_{policy}", ["--set", f"dub.extend={policy}"])
    row = res.loc[f"ext_{policy}"]
    assert row.status == "ok", row.error_message
    out = _frames(row.output_path)
    assert len(out) == 60 and out.shape[1:3] == (256, 256)
    want = footage_index(30, 60, policy)
    src = media["frames"][:30, :120].astype(np.int16)
    for j in (10, 29, 35, 44, 59):
        err = np.abs(src - out[j, :120].astype(np.int16)).mean(axis=(1, 2, 3))
        assert int(np.argmin(err)) == want[j] or err[want[j]] < err.min() + 0.5, (policy, j)


def test_30fps_odd_sized_footage_and_a_face_that_leaves(media):
    from fixtalk.train.talking_footage import write_footage

    d = media["dir"]
    frames = media["frames"][:50].copy()
    frames[20:32] = frames[20:32, :, ::-1][:, :, :1].repeat(256, axis=2)  # the face leaves the frame
    write_footage(frames, 25, d / "leaves.mp4")
    res = _run(d, [{"clip_id": "odd30", "source_video": "hopper30_odd.mkv", "audio": "short.wav"},
                   {"clip_id": "leaves", "source_video": "leaves.mp4", "audio": "short.wav"}], "out_odd")
    odd = res.loc["odd30"]
    assert odd.status == "ok", odd.error_message
    out = _frames(odd.output_path)
    assert out.shape[1:3] == (254, 252) and odd.fps == 30.0
    assert len(out) == 72  # 2.4 s at 30 fps
    gone = res.loc["leaves"]
    assert gone.status == "ok", gone.error_message
    assert 12 <= gone.frames_passed_through <= 16 and gone.frames_dubbed == 60 - gone.frames_passed_through
    out = _frames(gone.output_path)
    src = _frames(d / "leaves.mp4")
    assert np.abs(out[24].astype(int) - src[24].astype(int)).mean() < 3.0  # passed through
    assert np.abs(out[24].astype(int) - src[5].astype(int)).mean() > 20.0  # not another frame


def test_bad_footage_fails_its_row_naming_source_video(media, tmp_path):
    from tests.conftest import save_png

    d = media["dir"]
    (d / "empty.mp4").write_bytes(b"")
    still = save_png(d / "still.png", _hopper()[:256, :256])
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=256x256:rate=25",
                    "-t", "1", "-pix_fmt", "yuv420p", str(d / "noface.mp4")], check=True)
    two = np.concatenate([media["frames"][:25], media["frames"][:25, :, ::-1]], axis=2)
    from fixtalk.train.talking_footage import write_footage

    write_footage(two, 25, d / "two.mp4")
    rows = [{"clip_id": k, "source_video": v, "audio": "short.wav"} for k, v in
            (("empty", "empty.mp4"), ("still", still.name), ("audio_only", "speech_b.wav"),
             ("noface", "noface.mp4"), ("two", "two.mp4"), ("good", "hopper25.mp4"))]
    res = _run(d, rows, "out_bad")
    for key, kind in (("empty", "InvalidRow"), ("still", "NotAVideo"), ("audio_only", "NotAVideo"),
                      ("noface", "NoFace"), ("two", "SeveralFaces")):
        row = res.loc[key]
        assert row.status == "failed" and row.error_type == kind, (key, row.error_type, row.error_message)
        assert str(row.error_message).startswith(("source_video:", "column 'source_video'")), row.error_message
    assert res.loc["good"].status == "ok"


def test_manifest_knows_footage_columns_and_the_fingerprint_its_content(tmp_path):
    from manifests.validate import validate_frame
    from pipeline.config import PipelineConfig
    from pipeline.ledger import fingerprint, options_digest

    (tmp_path / "a.mp4").write_bytes(b"footage one")
    (tmp_path / "s.wav").write_bytes(b"x")
    (tmp_path / "p.png").write_bytes(b"picture")
    frame = pd.DataFrame([{"clip_id": "dub", "source_video": "a.mp4", "audio": "s.wav", "presenter_id": "h"},
                          {"clip_id": "none", "audio": "s.wav"},
                          {"clip_id": "still", "portrait": "p.png", "audio": "s.wav", "presenter_id": "h"},
                          {"clip_id": "other", "portrait": "p.png", "audio": "s.wav", "presenter_id": "x"}])
    out = validate_frame(frame, tmp_path, "m.csv").frame.set_index("clip_id")
    assert out.loc["dub"].status == "ok"
    assert out.loc["none"].status == "failed" and "portrait" in out.loc["none"].error_message
    # a presenter's footage fits the model for the presenter's still rows too
    assert out.loc["still"].presenter_video == str(tmp_path / "a.mp4")
    assert out.loc["other"].presenter_video is None
    row = out.loc["dub"].to_dict()
    opts = options_digest(PipelineConfig())
    before = fingerprint(row, opts, "ck")
    (tmp_path / "a.mp4").write_bytes(b"footage number two")
    assert fingerprint(row, opts, "ck") != before


def test_presenter_footage_fits_the_model_once_for_still_and_dub_rows(media):
    """``presenter_video`` on a still row and a dub's own footage: fitted once per footage
    (a tiny fit: 2 + 2 steps), cached and reused, resumable work removed."""
    d = media["dir"]
    portrait = d / "hopper.png"
    from tests.conftest import save_png

    save_png(portrait, _hopper())
    rows = [{"clip_id": "still_a", "portrait": portrait.name, "presenter_video": "hopper25.mp4", "audio": "short.wav"},
            {"clip_id": "still_b", "portrait": portrait.name, "presenter_video": "hopper25.mp4", "audio": "short.wav"},
            {"clip_id": "dub", "source_video": "hopper25.mp4", "audio": "short.wav"}]
    fit = ["--set", "adapt.enabled=true", "--set", "adapt.footage.steps=2", "--set", "adapt.footage.lip_steps=2",
           "--set", "qc.enabled=false", "--set", "dub.mouth=model"]  # the model's mouth is what a fit serves
    res = _run(d, rows, "out_fit", fit)
    assert (res.status == "ok").all(), res.error_message.tolist()
    assert set(res.adapted_from) == {"presenter_video", "source_video"}
    assert res.adapted_checkpoint.nunique() == 1  # one footage content, one fit
    fitted = Path(res.adapted_checkpoint.iloc[0])
    assert fitted.is_file() and not fitted.with_suffix(".work").exists()
    import torch

    record = torch.load(fitted, map_location="cpu", weights_only=True)["training"]
    assert record["footage_fit"]["steps"] == 2 and record["final_losses"]
