"""Rebuild the example media of ``examples/manifest.csv`` from packages (nothing is downloaded).

    .venv/bin/python examples/make_examples.py

* ``astronaut.jpg``: scikit-image's ``data.astronaut()`` (Eileen Collins, NASA, public domain),
  head-and-shoulders crop, 512x512 JPEG;
* ``grace_hopper.jpg``: matplotlib's sample ``grace_hopper.jpg`` (US Navy, public domain), as shipped;
* ``welcome.wav``: espeak-ng speech of the row's script (16 kHz mono);
* ``librivox_dashwood.flac``: LibriVox *Sense and Sensibility* (public domain) from Debian's
  ``pocketsphinx-testdata``, 16 kHz mono FLAC;
* ``astronaut_pose.mp4``: the astronaut photo turned and shifted a little on every frame (2 s,
  25 fps, 320x320, no audio): a head-pose reference.
* ``hopper_footage.mp4``: presenter footage to dub: the Grace Hopper portrait speaking another
  LibriVox sentence with its sound (fixtalk.train.talking_footage; 7 s, 30 fps, 288x288).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")
WELCOME = "Welcome to FixTalk Studio. This clip was rendered from one photo and a sound file."


def astronaut() -> None:
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.astronaut()[0:400, 40:440]).resize((512, 512), Image.LANCZOS)
    img.save(HERE / "astronaut.jpg", quality=88, optimize=True)


def grace_hopper() -> None:
    import matplotlib.cbook as cbook

    shutil.copyfile(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), HERE / "grace_hopper.jpg")


def speech() -> None:
    tmp = HERE / ".welcome22k.wav"
    subprocess.run(["espeak-ng", "-s", "160", "-w", str(tmp), WELCOME], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp), "-ar", "16000", "-ac", "1",
                    str(HERE / "welcome.wav")], check=True)
    tmp.unlink()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(LIBRIVOX), "-ar", "16000", "-ac", "1",
                    str(HERE / "librivox_dashwood.flac")], check=True)


def pose_video(frames: int = 50, side: int = 320) -> None:
    import cv2
    from skimage import data

    astro = data.astronaut()
    proc = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{side}x{side}",
         "-r", "25", "-i", "pipe:0", "-c:v", "libx264", "-preset", "slow", "-crf", "30",
         "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(HERE / "astronaut_pose.mp4")],
        stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for i in range(frames):
        phase = 2 * np.pi * i / frames
        turn = cv2.getRotationMatrix2D((256, 200), 8.0 * np.sin(phase), 0.62)
        turn[:, 2] += (-100 + 10 * np.sin(phase), -40 + 6 * np.sin(2 * phase))
        frame = cv2.warpAffine(astro, turn, (side, side), borderMode=cv2.BORDER_REPLICATE)
        proc.stdin.write(np.ascontiguousarray(frame).tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("ffmpeg failed to write astronaut_pose.mp4")


def presenter_footage() -> None:
    import soundfile as sf
    from PIL import Image

    from fixtalk.train.speech import resample
    from fixtalk.train.talking_footage import talking_frames, write_footage

    wave, sr = sf.read(str(LIBRIVOX).replace("0880", "0870"), dtype="float32")
    wave = resample(wave, sr)
    text = ("and mister john dashwood had then leisure to consider how much there might be "
            "prudently in his power to do for them")
    picture = np.asarray(Image.open(HERE / "grace_hopper.jpg").convert("RGB"))
    frames, _ = talking_frames(picture, wave, text, size=288, fps=30, seed=7)
    write_footage(frames, 30, HERE / "hopper_footage.mp4", wave, crf=23)


if __name__ == "__main__":
    astronaut()
    grace_hopper()
    speech()
    pose_video()
    presenter_footage()
    for path in sorted(HERE.iterdir()):
        print(f"{path.stat().st_size / 1024:8.1f} KiB  {path.name}")
