"""Face crop on hostile portraits made here from real photos available offline: skimage's
astronaut and matplotlib's Grace Hopper (glasses, cap, age), transformed in the test: off-centre in
a large canvas, rolled 30 and 90 degrees, grayscale (1 and 3 channels), RGBA, 16-bit, CMYK,
EXIF-rotated, a tiny face, no face, two faces. Each either gives an aligned crop whose own pixels
show a level face (checked by detecting landmarks again on the crop) or fails naming ``portrait``
and the fix. Landmark checks use dlib's 68 points: eyes 36-41 and 42-47."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fixtalk.measure.faces import detect_faces
from pipeline.config import PipelineConfig
from stages.face_crop import FaceCropStage
from stages.ingest import IngestStage

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SIZE = 160


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


def rotated(img: np.ndarray, angle: float) -> np.ndarray:
    """``img`` turned ``angle`` degrees counter-clockwise in a canvas that keeps all of it."""
    h, w = img.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    c, s = abs(turn[0, 0]), abs(turn[0, 1])
    nw, nh = int(h * s + w * c), int(h * c + w * s)
    turn[:, 2] += (nw / 2 - w / 2, nh / 2 - h / 2)
    return cv2.warpAffine(img, turn, (nw, nh), borderValue=(120, 120, 120))


@pytest.fixture(scope="module")
def portraits(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    d = tmp_path_factory.mktemp("portraits")
    astro, grace = data.astronaut(), grace_hopper()
    paths: dict[str, Path] = {}

    def save(name: str, image, **kwargs) -> None:
        paths[name.split(".")[0]] = d / name
        (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(d / name, **kwargs)

    save("grace.png", grace)
    save("astro.png", astro)
    corner = np.full((2000, 3000, 3), 205, np.uint8)
    corner[1488:, 2488:] = astro  # bottom-right corner of a large picture
    save("corner.png", corner)
    save("grace_roll30.png", rotated(grace, 30))
    save("astro_roll90.png", np.ascontiguousarray(np.rot90(astro, -1)))  # lying on its side
    save("grace_gray.jpg", Image.fromarray(grace).convert("L"), quality=92)  # 1-channel JPEG
    gray = np.asarray(Image.fromarray(grace).convert("L"))
    save("grace_gray3.jpg", np.dstack([gray] * 3), quality=92)
    rgba = np.dstack([grace, np.full(grace.shape[:2], 255, np.uint8)])
    rgba[:, :90, 3] = 0  # transparent strip -> white
    save("grace_rgba.png", rgba)
    save("grace_16bit.png", Image.fromarray((gray.astype(np.uint16) * 257)))  # mode I;16
    paths["grace_rgb16"] = d / "grace_rgb16.png"  # 48-bit RGB PNG
    cv2.imwrite(str(paths["grace_rgb16"]), grace[:, :, ::-1].astype(np.uint16) * 257)
    save("grace_cmyk.jpg", Image.fromarray(grace).convert("CMYK"), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned; display = rotate 90 degrees counter-clockwise
    save("grace_exif.jpg", Image.fromarray(np.ascontiguousarray(np.rot90(grace, -1))),
         exif=exif.tobytes(), quality=92)
    try:  # an iPhone-style HEIC photo (needs pillow-heif)
        import pillow_heif

        pillow_heif.register_heif_opener()
        save("grace_heic.heic", grace, quality=90)
    except ImportError:
        pass
    tiny = np.full((400, 600, 3), 180, np.uint8)
    tiny[100:172, 200:264] = cv2.resize(grace, (64, 72), interpolation=cv2.INTER_AREA)
    save("tiny.png", tiny)
    yy, xx = np.mgrid[0:300, 0:400]
    save("noface.png", np.dstack([xx * 255 // 400, yy * 255 // 300, np.full_like(xx, 90)])
         .astype(np.uint8))
    two = np.full((600, 1100, 3), 128, np.uint8)
    two[:, :512] = grace
    two[44:556, 560:1072] = astro
    save("two.png", two)
    paths["speech"] = d / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(paths["speech"]), "Hello."], check=True)
    return paths


@pytest.fixture(scope="module")
def stages():
    cfg = PipelineConfig()
    cfg.face_crop.size = SIZE
    return IngestStage(cfg), FaceCropStage(cfg)


def crop_row(stages, out: Path, clip_id: str, portrait: Path, speech: Path) -> dict:
    ingest, crop = stages
    row = {"clip_id": clip_id, "portrait": str(portrait), "audio": str(speech), "status": None,
           "out_dir": str(out), "work_dir": str(out / "work" / clip_id)}
    return crop.run_row(ingest.run_row(row))


def eyes(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return pts[36:42].mean(0), pts[42:48].mean(0)


def tilt(pts: np.ndarray) -> float:
    left, right = eyes(pts)
    return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))


@pytest.fixture(scope="module")
def reference(stages, portraits, tmp_path_factory) -> dict[str, np.ndarray]:
    """Crop-space eye centres of the untouched photos: every variant must land on them."""
    out = tmp_path_factory.mktemp("ref")
    ref = {}
    for name in ("grace", "astro"):
        res = crop_row(stages, out, name, portraits[name], portraits["speech"])
        assert res["status"] == "ok", res["error_message"]
        ref[name] = np.asarray(json.loads(Path(res["face_transform"]).read_text())["crop_landmarks"])
    return ref


@pytest.mark.parametrize("name, source", [
    ("grace", "grace"), ("corner", "astro"), ("grace_roll30", "grace"), ("astro_roll90", "astro"),
    ("grace_gray", "grace"), ("grace_gray3", "grace"), ("grace_rgba", "grace"),
    ("grace_16bit", "grace"), ("grace_rgb16", "grace"), ("grace_cmyk", "grace"),
    ("grace_exif", "grace"), ("grace_heic", "grace")])
def test_hostile_portrait_gives_a_level_aligned_crop(stages, portraits, reference, tmp_path, name,
                                                     source):
    if name not in portraits:
        pytest.skip(f"{name}: pillow-heif is not installed")
    res = crop_row(stages, tmp_path, name, portraits[name], portraits["speech"])
    assert res["status"] == "ok", res["error_message"]
    meta = json.loads(Path(res["face_transform"]).read_text())
    mapped = np.asarray(meta["crop_landmarks"])
    assert abs(tilt(mapped)) < 2.5, f"{name}: eyes tilted {tilt(mapped):.1f} deg in the crop"
    for a, b in zip(eyes(mapped), eyes(reference[source])):  # same framing as the plain photo
        assert np.linalg.norm(a - b) < 0.03 * SIZE, (name, a, b)
    crop = np.asarray(Image.open(res["face_crop"]))
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
    assert 40 < crop.mean() < 215, f"{name}: crop washed out or black ({crop.mean():.0f})"
    # independent check on the crop's own pixels: one face, eyes level and where they should be
    found = detect_faces(crop, upsample=1)
    assert len(found) == 1, f"{name}: {len(found)} faces in the crop"
    seen = found[0].landmarks
    assert abs(tilt(seen)) < 4.0, f"{name}: the crop shows eyes tilted {tilt(seen):.1f} deg"
    for a, b in zip(eyes(seen), eyes(mapped)):
        assert np.linalg.norm(a - b) < 0.05 * SIZE, (name, a, b)
    if name in ("grace_gray", "grace_gray3", "grace_16bit"):
        spread = crop.astype(int).max(-1) - crop.astype(int).min(-1)
        assert spread.mean() < 3, "a gray portrait must stay gray in the 3-channel crop"
    if name == "grace_rgba":
        portrait = np.asarray(Image.open(res["portrait_image"]))
        assert (portrait[:, :90] == 255).all()
    if name == "grace_exif":  # orientation applied: the stored 600x512 displays as 512x600
        assert (res["portrait_width"], res["portrait_height"]) == (512, 600)
    if name == "corner":
        assert res["portrait_width"] == 2048 and res["portrait_src_width"] == 3000
        assert min(np.asarray(meta["landmarks"])[:, 0]) > 0.8 * 2048


@pytest.mark.parametrize("name, kind, expect", [
    ("tiny", "FaceTooSmall", "face too small: it is 2"),
    ("noface", "NoFace", "no face found in the 400x300 picture"),
    ("two", "SeveralFaces", "2 faces found")])
def test_unusable_portrait_fails_naming_the_field_and_the_fix(stages, portraits, tmp_path, name,
                                                              kind, expect):
    for clip in ("first", "again"):  # the second answer comes from the cache, same message
        res = crop_row(stages, tmp_path, clip, portraits[name], portraits["speech"])
        assert (res["status"], res["error_stage"], res["error_type"]) == ("failed", "face_crop", kind)
        message = res["error_message"]
        assert message.startswith(f"portrait: {expect}"), message
    fix = {"FaceTooSmall": "the minimum is 40 px (face_crop.min_face_px); give a closer or "
                           "higher-resolution photo",
           "NoFace": "give a photo with one clearly visible, roughly frontal face at least 40 px",
           "SeveralFaces": "crop the picture to one person"}[kind]
    assert fix in message


def test_crops_are_shared_by_portrait_content_across_clips_and_files(stages, portraits, tmp_path):
    copy = tmp_path / "same_pixels.bmp"  # another file and format, the same picture
    Image.open(portraits["grace"]).save(copy)
    shutil.copy(portraits["grace"], tmp_path / "renamed.png")
    rows = [crop_row(stages, tmp_path, f"clip{i}", path, portraits["speech"])
            for i, path in enumerate([portraits["grace"], copy, tmp_path / "renamed.png",
                                      portraits["astro"]])]
    assert all(r["status"] == "ok" for r in rows)
    assert [r["face_cached"] for r in rows] == [False, True, True, False]
    assert rows[0]["face_crop"] == rows[1]["face_crop"] == rows[2]["face_crop"] != rows[3]["face_crop"]
    assert len(list((tmp_path / "work" / "_faces").glob("*.png"))) == 2


def test_face_alignment_backend_without_cached_weights_is_a_clear_systemic_error(monkeypatch,
                                                                                  tmp_path):
    from stages.base import SystemicError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    cfg = PipelineConfig()
    cfg.face_crop.size, cfg.face_crop.backend = 128, "face_alignment"
    with pytest.raises(SystemicError, match="2DFAN4-11f355bf06.pth.tar.*face_crop.backend=dlib"):
        FaceCropStage(cfg)
