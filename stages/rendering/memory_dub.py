"""The memory dub (``dub.mouth=memory``): every dubbed frame shows the presenter's own mouth,
recalled from their footage, instead of one drawn by the network.

For a dub row with footage track T and presenter memory M (:mod:`stages.rendering.presenter_memory`):

1. **targets** (:mod:`stages.rendering.mouth_targets`): the mouth shape the new speech asks for
   at every output frame, timed by the network's response to Audio2Lip's lip weights and scaled
   to this presenter's own range, closed in pauses and on P/B/M;
2. **recall** (:mod:`stages.rendering.recall`): the Viterbi path through the memory that best
   follows the targets, the pose of each footage frame and the presenter's own continuity, with
   every jump cross-faded;
3. **paste** (:func:`stages.face.mouth_rest.paste_lower_face`): the recalled lower face (a blend
   of two during a cross-fade) is moved onto the footage frame by the affine of the rigid
   landmarks (upper jaw, nose, eye corners), bicubic, at the footage's resolution, colour-matched
   on a ring around the mask (the match smoothed over time) and feathered into the lower face,
   whose mask covers both the frame's own chin and the recalled one. No model crop is upscaled
   into the mouth: teeth and lips are the presenter's own pixels.

``recall.npz`` in the clip's work folder keeps the targets, the path and the pauses (QC and the
benchmark read it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf

from fixtalk.measure.phone_sync import read_phones
from stages.face.mouth_rest import paste_lower_face
from stages.face.mouth_shape import head_pose
from stages.face.track import FaceTrack
from stages.media.av import decode_audio
from stages.rendering.mouth_targets import mouth_targets, speech_shapes
from stages.rendering.presenter_memory import PresenterMemory
from stages.rendering.recall import crossfades, recall_path, without_detours

#: weight of a new colour fit in the running colour match (the rest is the previous frames')
COLOUR_MOMENTUM = 0.25


def enough_footage(memory: PresenterMemory, cfg) -> tuple[bool, str]:
    """(the memory can carry the dub, why): ``dub.memory.min_frames`` usable frames and
    ``min_open_frames`` of them open (see :class:`stages.config.PresenterMemoryConfig`)."""
    n, opened = len(memory), memory.open_frames(cfg.open_margin)
    if n < int(cfg.min_frames):
        return False, f"{n} usable frames of the presenter's face (at least {cfg.min_frames} needed)"
    if opened < int(cfg.min_open_frames):
        return False, (f"the presenter's mouth is open in {opened} of {n} usable frames (at least "
                       f"{cfg.min_open_frames} needed): too little talking footage to recall from")
    return True, f"{n} usable frames, {opened} with the mouth open"


def row_audio(row: dict[str, Any]) -> np.ndarray:
    """The row's speech, float32 mono 16 kHz (ingest's ``audio_16k``, else decoded)."""
    path = row.get("audio_16k") or row.get("audio_wav") or row.get("audio")
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1) if sr == 16000 else decode_audio(path, 16000)


class ColourMatch:
    """The colour match (gain, offset) smoothed over consecutive frames of one shot."""

    def __init__(self):
        self.state: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, gain: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.state is not None:
            g0, o0 = self.state
            gain = (1 - COLOUR_MOMENTUM) * g0 + COLOUR_MOMENTUM * gain
            offset = (1 - COLOUR_MOMENTUM) * o0 + COLOUR_MOMENTUM * offset
        self.state = (gain, offset)
        return gain, offset


class MemoryMouth:
    """Paints recalled mouths onto a dub's footage frames (see the module docstring)."""

    def __init__(self, memory: PresenterMemory, track: FaceTrack, index: np.ndarray,
                 fades: list[list[tuple[int, float]]], feather: float):
        self.memory, self.track, self.index, self.fades = memory, track, index, fades
        self.feather = float(feather)
        self.colour = ColourMatch()
        self.shot = None

    def paint(self, j: int, frame: np.ndarray) -> np.ndarray:
        """Output frame ``j`` (footage frame ``index[j]``, usable) with its recalled mouth."""
        i = int(self.index[j])
        if self.shot != int(self.track.shot[i]):
            self.colour.reset()
            self.shot = int(self.track.shot[i])
        mem = self.memory
        sources = [(np.asarray(mem.patches[k]), mem.rigid[k].astype(np.float64), w) for k, w in self.fades[j]]
        out, _, _ = paste_lower_face(frame, self.track.landmarks[i], self.track.matrices[i], sources,
                                     self.track.size, self.feather, interpolation=cv2.INTER_CUBIC,
                                     colour=self.colour, cover=True)
        return out


def plan_recall(row: dict[str, Any], runtime: Any, cfg: Any, memory: PresenterMemory, track: FaceTrack,
                index: np.ndarray, deltas: np.ndarray, fps: float, work: Path) -> MemoryMouth:
    """Targets, the recall path and its cross-fades for a dub row; saved to ``recall.npz``."""
    crop, crop_lm = memory.reference_crop()
    predicted, r2 = speech_shapes(runtime.renderer, crop, crop_lm, deltas)
    phones = read_phones(row["words_json"]) if row.get("words_json") and Path(str(row["words_json"])).is_file() else []
    targets = mouth_targets(memory, predicted, r2, row_audio(row), fps, float(cfg.memory.pause_s), phones)
    poses = np.stack([head_pose(track.landmarks[int(i)]) if track.usable[int(i)] else np.zeros(3, np.float32)
                      for i in index])
    path = without_detours(recall_path(memory, targets.shapes, poses, targets.pause, cfg.memory), memory)
    np.savez(work / "recall.npz", path=path, memory_frames=memory.frames[path], targets=targets.shapes,
             pause=targets.pause, predicted=predicted, calibration_r2=r2)
    return MemoryMouth(memory, track, index, crossfades(path, memory, int(cfg.memory.crossfade)),
                       float(cfg.feather))


class MouthChoice:
    """Where a dub row's mouth comes from: ``mode`` (memory | model), why, and the memory."""

    def __init__(self, mode: str, reason: str, folder: Path | None = None, memory: PresenterMemory | None = None):
        self.mode, self.reason, self.folder, self.memory = mode, reason, folder, memory

    def columns(self) -> dict[str, Any]:
        mem = self.memory
        return {"dub_mouth": self.mode, "dub_mouth_reason": self.reason,
                "presenter_memory": str(self.folder) if self.folder else None,
                "memory_frames": len(mem) if mem is not None else None,
                "memory_open_frames": mem.open_frames(0.08) if mem is not None else None,
                "memory_build_s": mem.meta.get("build_s") if mem is not None else None}


def choose_mouth(row: dict[str, Any], cfg: Any, cache: Path, log=lambda s: None) -> MouthChoice:
    """``dub.mouth`` resolved for a dub row: ``model`` as asked; ``memory`` or ``auto`` build (or
    load) the footage's memory, and ``auto`` falls back to the model when it is not enough."""
    from stages.rendering.presenter_memory import cached_memory

    mode = str(cfg.mouth)
    if mode == "model":
        return MouthChoice("model", "dub.mouth=model")
    folder, memory = cached_memory(row["source_video"], str(row["source_rate"]), row["footage_track"],
                                   bool(row.get("source_has_audio")), cache, log)
    ok, why = enough_footage(memory, cfg.memory)
    if mode == "memory" and len(memory):
        return MouthChoice("memory", f"dub.mouth=memory ({why})", folder, memory)
    if ok:
        return MouthChoice("memory", f"auto: {why}", folder, memory)
    return MouthChoice("model", f"auto: the model draws the mouth: {why}", folder, memory)
