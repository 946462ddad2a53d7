"""On-disk format of talking-face training clips, and the torch Dataset that reads it.

A data set is a folder of clip folders. Each clip folder holds::

    frames.npy      uint8 (N, S, S, 3) RGB frames at 25 fps in the canonical crop (crop.py)
    audio.wav       16 kHz mono PCM-16, exactly N * 640 samples (one video frame = 40 ms)
    landmarks.npy   float32 (N, 68, 2) dlib-68 (x, y) pixel positions in the frames
    meta.json       {"format": 1, "fps": 25, "sample_rate": 16000, "size": S, "num_frames": N,
                     "identity": str, "split": "train"|"eval", "source": str, "licence": str,
                     optional "tracks": {name: [N floats]} (synthetic motion: yaw, pitch, roll,
                     scale, tx, ty, mouth_open, mouth_width, blink), optional "visemes": [N str]}

``frames.npy`` is memory-mapped when read, so a data set larger than RAM streams from disk.
"""
from __future__ import annotations

import json
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

FORMAT_VERSION = 1
FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


@dataclass
class Clip:
    """One clip read from disk (frames memory-mapped)."""

    path: Path
    frames: np.ndarray  # (N, S, S, 3) uint8
    landmarks: np.ndarray  # (N, 68, 2) float32
    audio: np.ndarray  # (N * 640,) float32 in [-1, 1]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono PCM-16 wav -> float32 samples in [-1, 1] and the sample rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        channels, rate = w.getnchannels(), w.getframerate()
    if channels > 1:
        data = data.reshape(-1, channels).mean(1)
    return data, rate


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Float samples in [-1, 1] -> mono PCM-16 wav."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def fit_audio(samples: np.ndarray, num_frames: int) -> np.ndarray:
    """Cut or zero-pad audio to exactly ``num_frames`` video frames of 640 samples."""
    n = num_frames * SAMPLES_PER_FRAME
    out = np.zeros(n, dtype=np.float32)
    m = min(n, len(samples))
    out[:m] = samples[:m]
    return out


def write_clip(folder: str | Path, frames: np.ndarray, audio: np.ndarray, landmarks: np.ndarray,
               meta: dict[str, Any]) -> Path:
    """Write one clip in the format above; checks shapes and fills the fixed meta fields."""
    folder = Path(folder)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"frames must be uint8 (N, S, S, 3), got {frames.dtype} {frames.shape}")
    n, size = frames.shape[0], frames.shape[1]
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.shape != (n, 68, 2):
        raise ValueError(f"landmarks must be ({n}, 68, 2) to match the frames, got {landmarks.shape}")
    if n < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {n}")
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "frames.npy", frames)
    np.save(folder / "landmarks.npy", landmarks)
    write_wav(folder / "audio.wav", fit_audio(audio, n))
    full = dict(meta)
    full.update(format=FORMAT_VERSION, fps=FPS, sample_rate=SAMPLE_RATE, size=int(size), num_frames=int(n))
    for key, track in full.get("tracks", {}).items():
        if len(track) != n:
            raise ValueError(f"track {key!r} has {len(track)} values, expected one per frame ({n})")
    (folder / "meta.json").write_text(json.dumps(full, indent=1))
    return folder


def read_clip(folder: str | Path) -> Clip:
    """Read a clip folder (frames memory-mapped) and check it is consistent."""
    folder = Path(folder)
    missing = [f for f in ("frames.npy", "audio.wav", "landmarks.npy", "meta.json") if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a clip folder: missing {', '.join(missing)}")
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{folder}: format {meta.get('format')!r}, this reader expects {FORMAT_VERSION}")
    frames = np.load(folder / "frames.npy", mmap_mode="r")
    landmarks = np.load(folder / "landmarks.npy")
    audio, rate = read_wav(folder / "audio.wav")
    if rate != SAMPLE_RATE:
        raise ValueError(f"{folder}/audio.wav is {rate} Hz, expected {SAMPLE_RATE}")
    return Clip(folder, frames, landmarks, fit_audio(audio, frames.shape[0]), meta)


def list_clips(root: str | Path, split: str | None = None) -> list[Path]:
    """Clip folders under ``root`` (sorted), optionally only those whose meta split matches.
    Folders under a dot-folder (``.partial``: clips still being written) are not clips."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    out = []
    for meta_path in sorted(root.rglob("meta.json")):
        if any(part.startswith(".") for part in meta_path.relative_to(root).parts[:-1]):
            continue
        if split is not None and json.loads(meta_path.read_text()).get("split", "train") != split:
            continue
        out.append(meta_path.parent)
    return out


#: ``drive`` of a clip (meta.json, default "all"): which motion changes between its frames; as the
#: item's ``drive`` code (train.stage_steps.partial_drive). Real clips are "all".
DRIVE_CODES = {"all": 0, "pose": 1, "lip": 2}

#: The synthetic head's six motion tracks (train.synthetic.motion_tracks draws them, an item's
#: ``head`` carries them), each with its neutral value and amplitude.
HEAD_TRACKS = {"yaw": (0.0, 16.0), "pitch": (0.0, 8.0), "roll": (0.0, 7.0),
               "scale": (1.0, 0.05), "tx": (0.0, 0.035), "ty": (0.0, 0.025)}


class TalkingFaceDataset(Dataset):
    """Self-driven samples: a source frame and ``window`` consecutive driving frames of one clip.

    Item (a dict of tensors):
      ``source`` (3,S,S) and ``driving`` (T,3,S,S) float32 in [-1, 1];
      ``mel`` (T,1,n_mels,16) mel windows aligned to the driving frames (Wav2Lip/EDTalk front-end);
      ``index`` (T,) driving frame numbers, ``source_index`` ();
      ``landmarks`` (T,68,2) and ``source_landmarks`` (68,2) in pixels;
      ``mouth_open`` (T,) synthetic mouth-opening track (NaN for real clips); ``clip`` () clip number;
      ``drive`` () the clip's :data:`DRIVE_CODES` code; ``head`` (T,6) synthetic head tracks
      :data:`HEAD_TRACKS` (NaN for real clips);
      with ``with_warp``: ``flow`` (2,S,S), ``mouth_mask`` (1,S,S), ``warp_valid`` () of the first
      driving frame (see :mod:`fixtalk.train.warp_targets`). ``colour_augment`` applies one random
      colour transform (:mod:`fixtalk.train.colour`) to an item's source and driving frames;
      ``audio_noise_dbfs`` adds a noise floor to the audio behind ``mel`` (see :meth:`noisy_audio`);
      ``stickers`` is the probability that an item with warp targets gets moving picture patches
      (:mod:`fixtalk.train.stickers`).
    Pairs are drawn deterministically from (seed, epoch, item index).
    """

    def __init__(self, root: str | Path, window: int = 1, split: str | None = "train",
                 audio_config=None, seed: int = 0, with_mel: bool = True, with_warp: bool = False,
                 colour_augment: bool = False, audio_noise_dbfs: float = 0.0,
                 stickers: float = 0.0) -> None:
        self.paths = list_clips(root, split)
        if not self.paths:
            raise ValueError(f"no clips with split={split!r} under {root} (expected folders with meta.json)")
        self.window = int(window)
        self.seed = int(seed)
        self.epoch = 0
        self.with_mel = with_mel
        self.with_warp = with_warp
        self.colour_augment = colour_augment
        self.audio_noise_dbfs = float(audio_noise_dbfs)
        self.stickers = float(stickers)
        if audio_config is None:
            from fixtalk.config import AudioConfig

            audio_config = AudioConfig()
        self.audio_config = audio_config
        self.clips = [read_clip(p) for p in self.paths]
        self._mels: dict[int, torch.Tensor] = {}
        self.starts = []
        for ci, clip in enumerate(self.clips):
            if clip.num_frames < self.window:
                continue
            self.starts.extend((ci, f) for f in range(clip.num_frames - self.window + 1))
        if not self.starts:
            raise ValueError(f"every clip under {root} is shorter than window={self.window} frames")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.starts)

    def mel_windows(self, ci: int) -> torch.Tensor:
        """(N, 1, n_mels, 16) mel windows for every frame of clip ``ci`` (cached)."""
        if ci not in self._mels:
            from fixtalk.nets.audio_features import mel_windows

            clip = self.clips[ci]
            mels = torch.from_numpy(mel_windows(self.noisy_audio(ci), self.audio_config))
            if mels.shape[0] != clip.num_frames:
                raise ValueError(f"{clip.path}: {mels.shape[0]} mel windows for {clip.num_frames} frames")
            self._mels[ci] = mels.float()
        return self._mels[ci]

    def noisy_audio(self, ci: int) -> np.ndarray:
        """Clip ``ci``'s audio; with ``audio_noise_dbfs`` < 0 plus white noise at that level
        -12..+8 dB (one level per clip), so digital silence looks like a real room's noise floor
        and Audio2Lip learns to keep the mouth shut on it."""
        audio = self.clips[ci].audio
        if not self.audio_noise_dbfs:
            return audio
        rng = np.random.default_rng([self.seed, ci, 7])
        sigma = 10.0 ** ((self.audio_noise_dbfs + rng.uniform(-12.0, 8.0)) / 20.0)
        return (audio + sigma * rng.standard_normal(len(audio))).astype(np.float32)

    @staticmethod
    def _track(tracks: dict, name: str, idx: np.ndarray) -> np.ndarray:
        """Synthetic motion track at ``idx`` (NaN for real clips, which have none)."""
        if name not in tracks:
            return np.full(len(idx), np.nan, np.float32)
        return np.asarray(tracks[name], np.float32)[idx]

    @staticmethod
    def _to_tensor(frames: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.array(frames, dtype=np.float32))
        return t.div_(127.5).sub_(1.0).movedim(-1, -3)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ci, start = self.starts[i]
        clip = self.clips[ci]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        src = int(rng.integers(clip.num_frames))
        idx = np.arange(start, start + self.window)
        tracks = clip.meta.get("tracks", {})
        mouth = self._track(tracks, "mouth_open", idx)
        item = {
            "source": self._to_tensor(clip.frames[src]),
            "driving": self._to_tensor(clip.frames[idx]),
            "index": torch.from_numpy(idx),
            "source_index": torch.tensor(src),
            "landmarks": torch.from_numpy(clip.landmarks[idx].astype(np.float32)),
            "source_landmarks": torch.from_numpy(clip.landmarks[src].astype(np.float32)),
            "mouth_open": torch.from_numpy(mouth),
            "mouth_width": torch.from_numpy(self._track(tracks, "mouth_width", idx)),
            "head": torch.from_numpy(np.stack([self._track(tracks, k, idx) for k in HEAD_TRACKS], -1)),
            "clip": torch.tensor(ci),
            "drive": torch.tensor(DRIVE_CODES[clip.meta.get("drive", "all")]),
        }
        if self.with_mel:
            item["mel"] = self.mel_windows(ci)[idx]
        if self.with_warp:
            item.update(self._warp(clip, src, int(idx[0])))
            if self.stickers and bool(item["warp_valid"]) and rng.random() < self.stickers:
                from fixtalk.train.stickers import add_stickers

                item["source"], item["driving"][0] = add_stickers(
                    item["source"], item["driving"][0], item["flow"], item["mouth_mask"],
                    clip.landmarks[src], rng)
        if self.colour_augment:
            from fixtalk.train.colour import apply_colour, random_colour_transform

            m, b = random_colour_transform(rng)
            item["source"] = apply_colour(item["source"], m, b)
            item["driving"] = apply_colour(item["driving"], m, b)
        return item

    @staticmethod
    def _warp(clip: Clip, src: int, drv: int) -> dict[str, torch.Tensor]:
        """Warp/mouth targets (train.warp_targets) of the first driving frame; synthetic clips
        only (``warp_valid`` False for real clips, whose background does not follow the warp)."""
        from fixtalk.train.warp_targets import warp_target

        size = clip.frames.shape[1]
        if clip.meta.get("kind") != "synthetic":
            return {"flow": torch.zeros(2, size, size), "mouth_mask": torch.zeros(1, size, size),
                    "warp_valid": torch.tensor(False)}
        flow, mouth = warp_target(clip.landmarks[src], clip.landmarks[drv], size)
        return {"flow": torch.from_numpy(flow), "mouth_mask": torch.from_numpy(mouth),
                "warp_valid": torch.tensor(True)}
