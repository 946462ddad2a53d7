"""Shared fixtures: one Ray session per test run, generated media, a tiny random checkpoint.

Media is made here, never downloaded: portraits from ``skimage.data.astronaut()`` (public domain,
NASA), speech with espeak-ng.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
# Ray workers inherit the driver's environment: let them import tests.toy_stages and the project.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# The local C2PA signing identity (stages/provenance/signing_identity.py) is made under the user's config
# folder: tests make theirs in a throwaway one, never in ~/.config.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="fixtalk-test-config-")


@pytest.fixture(scope="session")
def ray_session():
    """The one Ray cluster of the test run (2 CPUs, small object store, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
                 logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------------- media

def astronaut_portrait(size: int = 256, gray: bool = False, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A head-and-shoulders crop of the astronaut photo (one frontal face), ``size`` square."""
    from skimage import data
    from skimage.transform import resize

    img = data.astronaut()[0:330, 70:400]  # face roughly centred
    img = (resize(img, (size, size), anti_aliasing=True) * 255).astype(np.uint8)
    if offset != (0, 0):
        canvas = np.full((size + abs(offset[1]), size + abs(offset[0]), 3), 235, np.uint8)
        y, x = max(0, offset[1]), max(0, offset[0])
        canvas[y:y + size, x:x + size] = img
        img = canvas
    if gray:
        img = img.mean(axis=2).astype(np.uint8)
    return img


def save_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def make_portrait(path: Path, size: int = 256, **kwargs) -> Path:
    return save_png(path, astronaut_portrait(size, **kwargs))


def make_two_faces(path: Path, size: int = 256) -> Path:
    face = astronaut_portrait(size)
    return save_png(path, np.concatenate([face, face[:, ::-1]], axis=1))


def make_no_face(path: Path, size: int = 256) -> Path:
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([(xx * 255 // size), (yy * 255 // size), np.full_like(xx, 128)], axis=2).astype(np.uint8)
    return save_png(path, img)


def make_speech(path: Path, text: str = "Hello there, how are you?", speed: int = 170) -> Path:
    """Speech made with espeak-ng (22.05 kHz mono WAV)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return path


def top_level_atoms(path: Path) -> list[str]:
    """Names of an MP4's top-level boxes, in file order (ftyp, uuid (C2PA), moov, mdat, ...)."""
    import struct

    names, data = [], Path(path).read_bytes()
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


# -------------------------------------------------------------------------------- checkpoint

def tiny_model_config():
    """A 64x64 FixTalk (EMI + EDI at 16x16) small enough to render on a busy 2-core CPU."""
    from fixtalk.presets import get_preset

    cfg = get_preset("tiny")
    cfg.name, cfg.size, cfg.style_dim = "test-64", 64, 64
    cfg.channels = {4: 64, 8: 64, 16: 64, 32: 32, 64: 16}
    cfg.audio2lip.widths, cfg.audio2lip.embed_dim = (8, 16, 32, 32, 64), 64
    cfg.emi.level = cfg.edi.level = 16
    cfg.edi.slots = 16
    return cfg


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Random-weight 64px checkpoint in our format, made once per session (seed 0)."""
    import torch

    from fixtalk.checkpoints import save_checkpoint
    from fixtalk.model import FixTalk

    torch.manual_seed(0)
    model = FixTalk(tiny_model_config())
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny64.pt", model, training={"note": "random test weights"})
