"""The presenter memory: every usable frame of a presenter's footage indexed once by its mouth, so
a dub can recall the presenter's own mouth (teeth, lips, detail) instead of drawing one.

FixTalk's EDI keeps the features that carry identity in a memory and recalls the most relevant
ones at inference (research notes, fixtalk_method.md); here the memory is the footage itself, at
its own resolution. For each usable frame t of the face track (:mod:`stages.face.track`):

* ``patches[k]``: the lower face (nose base to below the chin, jaw to jaw) cut from the frame in
  its own pixel grid (no resampling, so no detail is lost before the one warp at recall), a box of
  one size for the whole memory centred on the mouth;
* ``rigid[k]``: the track's smoothed 68 landmarks in patch pixels (their rigid points place the
  patch on another frame); ``lips[k]``: the lips refitted on this frame alone (unsmoothed, so the
  descriptor sees fast closures; averaged over jittered boxes, :func:`fixtalk.measure.faces.fit_landmarks`,
  since a single dlib fit reads slightly parted lips over teeth as closed one time in a few);
* ``canonical[k]``: the frame -> canonical-face similarity (the track's crop transform scaled to
  the footage's median face size), the frame the descriptors live in;
* ``shapes[k]`` (opening, width, rounding), ``teeth[k]``, ``pose[k]`` (yaw, pitch, roll
  proxies), ``sharpness[k]`` (:mod:`stages.face.mouth_shape`);
* ``speaking[k]``: the footage's own audio is speech there (all True without an audio track);
* ``visemes[k]``: the viseme of the phone the presenter was saying there (its own speech aligned
  to the row's ``source_transcript``, else heard; :mod:`stages.rendering.footage_phones`);
* ``run[k]``: consecutive usable frames of one shot share a run id (the recall plays runs);
* ``reference.npz``: the footage's reference frame (most frontal, least open mouth) cut to the
  model crop, with its landmarks in crop pixels (the targets calibrate the network on it).

Built once per footage content, track and options under ``OUT/work/_memory/<key>/``, locked
against concurrent builders, resumable (arrays checkpointed every ``CHECKPOINT_EVERY`` frames);
its cost (seconds, frames, bytes) is recorded in ``memory.json``.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fixtalk.measure.faces import box_from_landmarks, fit_landmarks
from fixtalk.measure.speech_pauses import speech_activity
from stages.face.mouth_shape import head_pose, inter_ocular, mouth_shape, sharpness, teeth_share
from stages.face.track import FaceTrack, usable_runs
from stages.media.av import MediaError, decode_audio
from stages.face.alignment import transform_points, warp_to_crop
from stages.media.footage import content_hash, footage_frames, reference_frame
from stages.media.locks import file_lock
from stages.rendering.footage_phones import footage_visemes

MEMORY_VERSION = 4
CHECKPOINT_EVERY = 200
#: patch box around the mouth centre, in inter-ocular distances: half width, above, below
BOX_HALF_WIDTH, BOX_ABOVE, BOX_BELOW = 1.15, 0.95, 1.45
ARRAYS = ("frames", "shapes", "teeth", "pose", "sharpness", "speaking", "run", "lips", "rigid",
          "origin", "canonical")


@dataclass
class PresenterMemory:
    """An indexed footage (see the module docstring); ``patches`` is memory-mapped."""

    frames: np.ndarray
    shapes: np.ndarray
    teeth: np.ndarray
    pose: np.ndarray
    sharpness: np.ndarray
    speaking: np.ndarray
    run: np.ndarray
    lips: np.ndarray
    rigid: np.ndarray
    origin: np.ndarray
    canonical: np.ndarray
    patches: np.ndarray
    meta: dict[str, Any]
    folder: Path
    #: viseme code per frame of the footage's own speech (stages/rendering/footage_phones.py)
    visemes: np.ndarray | None = None
    phones_source: str = "none"

    def __len__(self) -> int:
        return int(len(self.frames))

    @classmethod
    def load(cls, folder: str | Path) -> "PresenterMemory":
        folder = Path(folder)
        with np.load(folder / "memory.npz") as data:
            arrays = {name: data[name] for name in ARRAYS}
        patches = np.load(folder / "patches.npy", mmap_mode="r")
        return cls(**arrays, patches=patches, meta=json.loads((folder / "memory.json").read_text()),
                   folder=folder)

    def reference_crop(self) -> tuple[np.ndarray, np.ndarray]:
        """(the reference frame's model crop (S, S, 3) uint8, its 68 landmarks in crop pixels)."""
        with np.load(self.folder / "reference.npz") as data:
            return data["crop"], data["landmarks"]

    def rest_opening(self) -> float:
        """The presenter's closed mouth: the 5th percentile of the opening over the memory."""
        return float(np.percentile(self.shapes[:, 0], 5)) if len(self) else 0.0

    def open_frames(self, margin: float) -> int:
        """Frames whose opening exceeds the resting opening by ``margin``."""
        return int((self.shapes[:, 0] > self.rest_opening() + float(margin)).sum()) if len(self) else 0


def memory_key(footage: str, rate: str, track_path: str | Path) -> str:
    """Cache key of a footage's memory: its content, frame rate and face track file."""
    blob = json.dumps([content_hash(footage), str(rate), Path(track_path).name, MEMORY_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_memory(footage: str, rate: str, track_path: str | Path, has_audio: bool, cache: Path,
                  log=lambda s: None, transcript: str | None = None) -> tuple[Path, PresenterMemory]:
    """(folder, memory) of a footage, built once (locked; a killed build resumes), with the
    visemes of its own speech (``transcript``: what the presenter says, else heard)."""
    folder = cache / memory_key(footage, rate, track_path)
    with file_lock(folder.with_suffix(".lock")):
        if not (folder / "memory.json").is_file():
            MemoryBuilder(footage, rate, FaceTrack.load(track_path), has_audio, folder, log).build()
        memory = PresenterMemory.load(folder)
        memory.visemes, memory.phones_source = footage_visemes(memory, footage, transcript or None, log)
    return folder, memory


def patch_size(track: FaceTrack) -> tuple[int, int]:
    """(height, width) of the memory's patches: the box for the largest face of the footage."""
    iods = [inter_ocular(track.landmarks[t]) for t in np.nonzero(track.usable)[0]]
    iod = 1.05 * float(np.max(iods)) if iods else 1.0
    return int(np.ceil((BOX_ABOVE + BOX_BELOW) * iod)), int(np.ceil(2 * BOX_HALF_WIDTH * iod))


def patch_origin(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Top-left corner (x, y) in frame pixels of the patch of a face with ``landmarks``."""
    pts = np.asarray(landmarks, np.float64)
    centre = (pts[48] + pts[54]) / 2
    h, w = size
    above = h * BOX_ABOVE / (BOX_ABOVE + BOX_BELOW)
    return np.round(centre - (w / 2, above)).astype(np.int64)


def cut_patch(frame: np.ndarray, origin: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The ``size`` box at ``origin`` of ``frame``; outside the picture, edge pixels repeated."""
    h, w = size
    fh, fw = frame.shape[:2]
    x0, y0 = int(origin[0]), int(origin[1])
    ys = np.clip(np.arange(y0, y0 + h), 0, fh - 1)
    xs = np.clip(np.arange(x0, x0 + w), 0, fw - 1)
    return frame[ys[:, None], xs[None, :]]


class MemoryBuilder:
    """One pass over the footage that fills a memory folder (see the module docstring)."""

    def __init__(self, footage: str, rate: str, track: FaceTrack, has_audio: bool, folder: Path, log):
        self.footage, self.rate, self.track, self.folder, self.log = footage, rate, track, folder, log
        self.has_audio = bool(has_audio)
        runs = usable_runs(track.usable, track.shot)
        self.order = np.array([t for a, b in runs for t in range(a, b)], np.int64)
        self.run_of = {t: r for r, (a, b) in enumerate(runs) for t in range(a, b)}
        self.size = patch_size(track)
        # canonical frame: the crop transform rescaled so the median face keeps its pixel size
        scales = [np.sqrt(abs(np.linalg.det(track.matrices[t][:, :2]))) for t in self.order]
        self.canon_scale = 1.0 / float(np.median(scales)) if scales else 1.0
        self.reference = reference_frame(track)

    def build(self) -> None:
        folder, n = self.folder, len(self.order)
        folder.mkdir(parents=True, exist_ok=True)
        started = self.started = time.perf_counter()
        patches_path = folder / "patches.npy"
        state = self._resume(n, patches_path)
        patches = np.lib.format.open_memmap(patches_path, mode="r+" if state["done"] else "w+",
                                            dtype=np.uint8, shape=(n, *self.size, 3))
        position = {int(t): k for k, t in enumerate(self.order)}
        done, seen = state["done"], 0
        arrays = state["arrays"]
        for chunk in footage_frames(self.footage, self.rate):
            for frame in chunk:
                if seen == self.reference:
                    self._save_reference(frame)
                k = position.get(seen)
                seen += 1
                if k is None or k < done:
                    continue
                patches[k] = self._index(frame, int(self.order[k]), k, arrays)
                done = k + 1
                if done % CHECKPOINT_EVERY == 0:
                    patches.flush()
                    self._checkpoint(done, arrays)
                    self.log(f"presenter memory: {done}/{n} frames")
        patches.flush()
        del patches
        arrays["speaking"][:] = self._speaking()
        np.savez(folder / "memory.npz", **arrays)
        seconds = round(time.perf_counter() - started + state["seconds"], 2)
        meta = {"footage": str(self.footage), "rate": str(self.rate), "frames": n,
                "footage_frames": len(self.track), "patch": list(self.size), "fps": float(self.track.fps),
                "build_s": seconds, "bytes": int((folder / "patches.npy").stat().st_size),
                "version": MEMORY_VERSION, "has_audio": self.has_audio}
        (folder / "memory.json").write_text(json.dumps(meta, indent=1))
        (folder / "partial.npz").unlink(missing_ok=True)

    def _resume(self, n: int, patches_path: Path) -> dict[str, Any]:
        partial = self.folder / "partial.npz"
        if partial.is_file() and patches_path.is_file():
            with np.load(partial) as data:
                arrays = {name: np.array(data[name]) for name in ARRAYS}
                done, seconds = int(data["_done"]), float(data["_seconds"])
            self.log(f"presenter memory: resuming at frame {done}/{n}")
            return {"done": done, "arrays": arrays, "seconds": seconds}
        arrays = {"frames": self.order.copy(), "shapes": np.zeros((n, 3), np.float32),
                  "teeth": np.zeros(n, np.float32), "pose": np.zeros((n, 3), np.float32),
                  "sharpness": np.zeros(n, np.float32), "speaking": np.ones(n, bool),
                  "run": np.array([self.run_of[int(t)] for t in self.order], np.int32),
                  "lips": np.zeros((n, 20, 2), np.float32), "rigid": np.zeros((n, 68, 2), np.float32),
                  "origin": np.zeros((n, 2), np.int64), "canonical": np.zeros((n, 2, 3), np.float32)}
        return {"done": 0, "arrays": arrays, "seconds": 0.0}

    def _checkpoint(self, done: int, arrays: dict[str, np.ndarray]) -> None:
        tmp = self.folder / "partial.tmp.npz"
        np.savez(tmp, **arrays, _done=done, _seconds=time.perf_counter() - self.started)
        tmp.replace(self.folder / "partial.npz")

    def _index(self, frame: np.ndarray, t: int, k: int, arrays: dict[str, np.ndarray]) -> np.ndarray:
        smooth = self.track.landmarks[t]
        own = fit_landmarks(frame, box_from_landmarks(smooth), refits=1, jitter=True)
        origin = patch_origin(smooth, self.size)
        arrays["shapes"][k] = mouth_shape(own)
        arrays["teeth"][k] = teeth_share(frame, own)
        arrays["pose"][k] = head_pose(smooth)
        arrays["sharpness"][k] = sharpness(frame, own)
        arrays["lips"][k] = own[48:68] - origin
        arrays["rigid"][k] = smooth - origin
        arrays["origin"][k] = origin
        canon = np.array(self.track.matrices[t], np.float64)
        canon[:, :] *= self.canon_scale
        arrays["canonical"][k] = canon
        return cut_patch(frame, origin, self.size)

    def _save_reference(self, frame: np.ndarray) -> None:
        matrix = self.track.matrices[self.reference]
        np.savez(self.folder / "reference.npz", crop=warp_to_crop(frame, matrix, self.track.size),
                 landmarks=transform_points(matrix, self.track.landmarks[self.reference]))

    def _speaking(self) -> np.ndarray:
        """Per memory frame: the footage's own audio is speech there (True without audio)."""
        n = len(self.order)
        if not self.has_audio or not n:
            return np.ones(n, bool)
        fps = float(Fraction(self.rate))
        try:
            samples = decode_audio(self.footage, 16000)
        except MediaError:
            return np.ones(n, bool)
        activity = speech_activity(samples, 16000, fps, len(self.track))
        return ~activity.silent[self.order]
