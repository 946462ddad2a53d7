"""Offline self-driven training set from still portraits that registry packages ship.

Portraits (licences in docs/model_card.md):
* ``astronaut``: scikit-image ``data.astronaut()`` (Eileen Collins, NASA, public domain) -> training;
* ``grace_hopper``: matplotlib's ``sample_data/grace_hopper.jpg`` (US Navy photograph, public
  domain) -> held out for evaluation (never used in training).
scikit-image's ``camera`` has no detectable face and ``lfw_subset`` is 25x25 px, so neither is used.
One training identity is thin: each clip therefore augments it (colour, gamma, crop scale/shift,
horizontal flip) so the model sees many "pseudo-identities"; it is still one real face.
``--reshape P`` gives a fraction P of the training clips a new random face geometry
(fixtalk.train.face_shape). ``--portraits DIR`` adds every image in DIR (portraits the user holds
the rights to) as a further training identity; training clips go round-robin over identities.

Each clip: one utterance (espeak-ng or LibriVox, force-aligned -> visemes), a smooth random head
trajectory (yaw, pitch, roll, scale, shift), blinks, and frames rendered by face_warp.render_frame.

Usage: ``python -m fixtalk.train.synthetic OUT --clips N --size 128 [--eval-clips M] [--seed S]
[--portraits DIR] [--reshape P]``
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from fixtalk.train import crop as cropping
from fixtalk.train.data_format import FPS, HEAD_TRACKS, SAMPLES_PER_FRAME, write_clip
from fixtalk.train.face_warp import Motion, render_frame
from fixtalk.train.speech import Utterance, speech_utterances, viseme_track

PORTRAITS = {
    "astronaut": ("skimage.data.astronaut (Eileen Collins, NASA)", "public domain", "train"),
    "grace_hopper": ("matplotlib sample_data/grace_hopper.jpg (US Navy photograph)", "public domain", "eval"),
}


def load_portrait(name: str) -> np.ndarray:
    """RGB uint8 image of a named portrait (all shipped by installed packages)."""
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    if name == "grace_hopper":
        import matplotlib
        from skimage import io

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        return io.imread(path)[:, :, :3]
    raise ValueError(f"unknown portrait {name!r}; expected one of {sorted(PORTRAITS)}")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def user_portraits(folder: str | Path) -> dict[str, np.ndarray]:
    """{file stem: RGB uint8 image} for every image in ``folder`` (grey, grey+alpha, RGBA and
    16-bit images become 8-bit RGB). Each must show one detectable face; the error names the file
    that does not."""
    from skimage import color, io, util

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--portraits {folder}: not a folder of portrait images")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--portraits {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    images = {}
    for f in files:
        try:
            img = io.imread(f)
        except Exception as e:  # noqa: BLE001 - any decoder error is the same bad file for the user
            raise ValueError(f"--portraits {f}: not a readable image ({e})") from None
        if img.ndim == 3 and img.shape[2] in (2, 4):  # drop alpha
            img = img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
        img = np.ascontiguousarray(util.img_as_ubyte(color.gray2rgb(img) if img.ndim == 2 else img))
        try:
            portrait_landmarks(img)
        except ValueError as e:
            raise ValueError(f"--portraits {f}: {e}; use a larger, frontal portrait or remove it") from None
        if f.stem in PORTRAITS or f.stem in images:
            raise ValueError(f"--portraits {f}: the identity name {f.stem!r} is taken; rename the file")
        images[f.stem] = img
    return images


def augment_colour(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Random per-channel gain, saturation, brightness and gamma (identity augmentation)."""
    x = image.astype(np.float32) / 255.0
    gain = 1.0 + strength * rng.uniform(-0.12, 0.12, size=3)
    x = x * gain
    grey = x.mean(2, keepdims=True)
    x = grey + (x - grey) * (1.0 + strength * rng.uniform(-0.35, 0.25))
    x = np.clip(x * (1.0 + strength * rng.uniform(-0.15, 0.15)), 0, 1) ** (1.0 + strength * rng.uniform(-0.2, 0.2))
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


_LANDMARK_CACHE: dict[str, np.ndarray] = {}


def portrait_landmarks(image: np.ndarray) -> np.ndarray:
    """dlib-68 landmarks of the portrait's face, cached by image content (detection on a large
    portrait takes seconds and every clip of a portrait needs the same landmarks)."""
    key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)
    if key not in _LANDMARK_CACHE:
        lm = cropping.detect_landmarks(image)
        if lm is None:
            raise ValueError(f"no face found in the portrait {image.shape} (dlib HOG detector); "
                             "expected a frontal face photograph")
        _LANDMARK_CACHE[key] = lm
    return _LANDMARK_CACHE[key].copy()


def aligned_portrait(image: np.ndarray, size: int, rng: np.random.Generator | None, flip: bool = False,
                     oversample: int = 2, landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Portrait aligned to the canonical crop at ``oversample * size`` and its landmarks in ``size``
    pixels; with ``rng``, a random crop scale / shift (and ``flip``) augments it. ``landmarks``:
    the face's 68 points in ``image`` (detected when None)."""
    lm = portrait_landmarks(image) if landmarks is None else np.array(landmarks, dtype=np.float64)
    if flip:
        image = np.ascontiguousarray(image[:, ::-1])
        lm = lm.copy()
        lm[:, 0] = image.shape[1] - 1 - lm[:, 0]
        lm = lm[cropping.MIRROR_68]
    scale, shift = 1.0, (0.0, 0.0)
    if rng is not None:
        scale = float(rng.uniform(0.9, 1.12))
        shift = (float(rng.uniform(-0.035, 0.035)), float(rng.uniform(-0.03, 0.03)))
    big = size * oversample
    mat = cropping.crop_matrix(lm, big, scale=scale, shift=shift)
    return cropping.warp_crop(image, mat, big), cropping.apply_matrix(mat, lm) / oversample


def smooth_noise(rng: np.random.Generator, n: int, amp: float, period_frames: float) -> np.ndarray:
    """Smooth random track: a sum of three random sinusoids around ``period_frames``."""
    t = np.arange(n)
    out = np.zeros(n)
    for _ in range(3):
        p = period_frames * rng.uniform(0.5, 1.6)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * t / p + rng.uniform(0, 2 * np.pi))
    return amp * out / 2.0


def blink_track(rng: np.random.Generator, n: int) -> np.ndarray:
    """Blinks every 2-5 s, each 5 frames (200 ms)."""
    out = np.zeros(n)
    shape = np.array([0.35, 0.85, 1.0, 0.7, 0.3])
    t = int(rng.integers(5, 50))
    while t < n - 5:
        out[t:t + 5] = shape
        t += int(rng.integers(50, 125))
    return out


def motion_tracks(rng: np.random.Generator, n: int, still: bool = False) -> dict[str, np.ndarray]:
    """Head trajectory tracks (degrees / scale / crop fractions) for ``n`` frames."""
    k = 0.25 if still else 1.0
    periods = {"yaw": 90, "pitch": 70, "roll": 110, "scale": 120, "tx": 100, "ty": 100}
    out = {name: centre + smooth_noise(rng, n, amplitude * k, periods[name])
           for name, (centre, amplitude) in HEAD_TRACKS.items()}
    out["blink"] = blink_track(rng, n)
    return out


def render_tracks(base: np.ndarray, base_lm: np.ndarray, tracks: dict[str, np.ndarray],
                  size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N,S,S,3) uint8 and landmarks (N,68,2) of ``base`` (aligned at k * size, landmarks
    in ``size`` pixels) moved by per-frame :class:`Motion` tracks (face_warp.render_frame)."""
    n = len(next(iter(tracks.values())))
    frames = np.empty((n, size, size, 3), np.uint8)
    lms = np.empty((n, 68, 2), np.float32)
    for t in range(n):
        m = Motion(**{k: float(v[t]) for k, v in tracks.items()})
        frames[t], lms[t] = render_frame(base, base_lm, m, size)
    return frames, lms


def make_clip(portrait: np.ndarray, utt: Utterance, size: int, rng: np.random.Generator,
              augment: bool = True, reshape: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Frames (N,S,S,3), landmarks (N,68,2), audio and meta for one synthetic clip. With
    ``augment``, a fraction ``reshape`` of clips also gets a new face geometry (face_shape.py)."""
    lead, tail = rng.uniform(0.15, 0.6, size=2)
    audio = np.concatenate([np.zeros(int(lead * 16000), np.float32), utt.audio,
                            np.zeros(int(tail * 16000), np.float32)])
    n = len(audio) // SAMPLES_PER_FRAME
    phones = [(p, s + lead, e + lead) for p, s, e in utt.phones]
    amplitude = float(rng.uniform(0.8, 1.25)) if augment else 1.0
    visemes, mouth_open, width = viseme_track(phones, n, amplitude=amplitude)
    flip = bool(augment and rng.random() < 0.5)
    image = augment_colour(portrait, rng) if augment else portrait
    # colour augmentation moves no landmark: detect once on the (cached) original portrait
    base, base_lm = aligned_portrait(image, size, rng if augment else None, flip=flip,
                                     landmarks=portrait_landmarks(portrait))
    reshaped = bool(augment and reshape > 0 and rng.random() < reshape)
    if reshaped:
        from fixtalk.train.face_shape import reshape_portrait

        base, base_lm = reshape_portrait(base, base_lm, size, rng)
    tracks = motion_tracks(rng, n, still=bool(rng.random() < 0.25))
    tracks["mouth_open"] = mouth_open.astype(np.float64)
    tracks["mouth_width"] = width.astype(np.float64)
    frames, lms = render_tracks(base, base_lm, tracks, size)
    meta = {
        "kind": "synthetic",
        "speech": {"source": utt.source, "licence": utt.licence, "text": utt.text},
        "augment": {"flip": flip, "mouth_amplitude": amplitude, "reshape": reshaped},
        "visemes": visemes,
        "tracks": {k: [round(float(x), 5) for x in v] for k, v in tracks.items()},
    }
    return frames, lms, audio[: n * SAMPLES_PER_FRAME], meta


def build(out: str | Path, clips: int, size: int = 128, eval_clips: int = 4, seed: int = 0,
          log=print, utterances: dict[str, list[Utterance]] | None = None,
          portraits: str | Path | None = None, reshape: float = 0.0) -> list[Path]:
    """Write ``clips`` training clips (astronaut, plus the images of ``portraits``) and
    ``eval_clips`` held-out clips (Grace Hopper, held-out sentences/voice/recording) under ``out``.
    ``utterances`` ({"train": [...], "eval": [...]}) replaces the default speech of a split (tests
    use one short utterance). ``reshape``: fraction of training clips given a new face geometry."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    extra = user_portraits(portraits) if portraits else {}
    written = []
    for split, count in (("train", clips), ("eval", eval_clips)):
        if count <= 0:
            continue
        names = [k for k, v in PORTRAITS.items() if v[2] == split] + (list(extra) if split == "train" else [])
        given = (utterances or {}).get(split)
        utts = given if given else speech_utterances(held_out=(split == "eval"), seed=seed)
        log(f"[synthetic] {split}: {len(utts)} utterances, portraits {names}")
        for i in range(count):
            name = names[i % len(names)]
            utt = utts[int(rng.integers(len(utts)))] if split == "train" else utts[i % len(utts)]
            image = extra[name] if name in extra else load_portrait(name)
            frames, lms, audio, meta = make_clip(image, utt, size, rng, augment=(split == "train"),
                                                 reshape=reshape if split == "train" else 0.0)
            if name in extra:
                src, lic = f"{Path(portraits) / name} (user-supplied)", "user-supplied"
            else:
                src, lic, _ = PORTRAITS[name]
            meta.update(identity=name, split=split, source=src, licence=lic)
            folder = write_clip(out / f"{split}_{i:04d}", frames, audio, lms, meta)
            written.append(folder)
            log(f"[synthetic] {folder.name}: {len(frames)} frames ({len(frames) / FPS:.1f} s), {utt.source}")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fixtalk.train.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output data folder")
    ap.add_argument("--clips", type=int, default=48, help="training clips (default 48)")
    ap.add_argument("--eval-clips", type=int, default=4, help="held-out evaluation clips (default 4)")
    ap.add_argument("--size", type=int, default=128, help="frame size in pixels (default 128)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--portraits", help="folder of further training portraits (images you hold the rights to)")
    ap.add_argument("--reshape", type=float, default=0.0,
                    help="fraction of training clips whose face gets a new random geometry (default 0)")
    args = ap.parse_args(argv)
    if args.size < 32 or args.size % 8:
        ap.error(f"--size must be a multiple of 8 and >= 32, got {args.size}")
    if not 0.0 <= args.reshape <= 1.0:
        ap.error(f"--reshape is a fraction of clips in [0, 1], got {args.reshape}")
    try:
        build(args.out, args.clips, args.size, args.eval_clips, args.seed, portraits=args.portraits,
              reshape=args.reshape)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
