"""The memory dub (``dub.mouth=memory``): every dubbed frame shows the presenter's own mouth,
recalled from their footage, instead of one drawn by the network.

For a dub row with footage track T and presenter memory M (:mod:`stages.rendering.presenter_memory`):

1. **targets** (:mod:`stages.rendering.mouth_targets`): the mouth shape the new speech asks for
   at every output frame, timed by the network's response to Audio2Lip's lip weights and scaled
   to this presenter's own range, closed in pauses and on P/B/M;
2. **recall** (:mod:`stages.rendering.recall`): the Viterbi path through the memory that best
   follows the targets, the pose of each footage frame and the presenter's own continuity, with
   every jump cross-faded;
3. **reshape** (``dub.memory.reshape``): the recalled mouth's opening is brought to the
   target's, by at most ``dub.memory.warp`` eye distances: ``warp`` moves its jaw side at full
   resolution (:func:`stages.face.mouth_warp.reshape_opening`); ``network`` adds the generator's
   change for that opening, rendered with the painted frame as its own source
   (:meth:`MemoryMouth.lip_residual`, :mod:`stages.rendering.dub`); docs/model_card.md compares them;
4. **paste** (:func:`stages.face.mouth_rest.paste_lower_face`): the recalled lower face (a blend
   of two during a cross-fade) is moved onto the footage frame by the affine of the rigid
   landmarks (upper jaw, nose, eye corners), Lanczos-resampled, at the footage's resolution, colour-matched
   on a ring around the mask by a per-channel gain (mean ratio, smoothed over time: a least-squares
   fit between two frames' unregistered texture flattens the mouth's contrast) and feathered into the lower face,
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
from stages.face.mouth_warp import opening_change, reshape_opening
from stages.face.track import FaceTrack
from stages.media.paste import ratio_colour
from stages.media.av import decode_audio
from stages.rendering.footage_phones import frame_visemes
from stages.rendering.mouth_targets import lip_direction, mouth_targets, speech_shapes
from stages.rendering.presenter_memory import PresenterMemory
from stages.rendering.recall import continues, crossfades, recall_path, without_detours

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
                 fades: list[list[tuple[int, float]]], feather: float,
                 openings: np.ndarray | None = None, warp: float = 0.0, lip_toward: np.ndarray | None = None):
        self.memory, self.track, self.index, self.fades = memory, track, index, fades
        self.feather = float(feather)
        self.openings, self.warp, self.lip_toward = openings, float(warp), lip_toward
        self.rest = memory.rest_opening()
        self.colour = ColourMatch()
        self.shot = None
        self.mask: np.ndarray | None = None  # the last paint's lower-face mask, crop pixels

    def paint(self, j: int, frame: np.ndarray) -> np.ndarray:
        """Output frame ``j`` (footage frame ``index[j]``, usable) with its recalled mouth."""
        i = int(self.index[j])
        if self.shot != int(self.track.shot[i]):
            self.colour.reset()
            self.shot = int(self.track.shot[i])
        reshape = self.lip_toward is None
        sources = [(self.recalled(k, j, reshape), self.memory.rigid[k].astype(np.float64), w)
                   for k, w in self.fades[j]]
        out, self.mask, _ = paste_lower_face(frame, self.track.landmarks[i], self.track.matrices[i], sources,
                                             self.track.size, self.feather, interpolation=cv2.INTER_LANCZOS4,
                                             colour=self.colour, cover=True, match=ratio_colour)
        return out

    def change(self, k: int, j: int) -> float:
        """The opening change (eye distances) memory frame ``k`` needs to show output frame ``j``'s
        target, within the bounds of :func:`stages.face.mouth_warp.opening_change`."""
        if self.openings is None or self.warp <= 0:
            return 0.0
        return opening_change(float(self.memory.shapes[k, 0]), float(self.openings[j]), self.rest, self.warp)

    def recalled(self, k: int, j: int, reshape: bool = True) -> np.ndarray:
        """Memory frame ``k``'s lower face, reshaped (with ``reshape``) to output frame ``j``'s
        target opening (:func:`stages.face.mouth_warp.reshape_opening`)."""
        mem = self.memory
        patch = np.asarray(mem.patches[k])
        change = self.change(k, j) if reshape else 0.0
        return reshape_opening(patch, mem.rigid[k], mem.lips[k], change) if change else patch

    def lip_residual(self, j: int) -> np.ndarray:
        """Delta alpha_lip asking the network (``dub.memory.reshape=network``) for the opening
        change output frame ``j``'s recalled mouth still needs."""
        change = sum(w * self.change(k, j) for k, w in self.fades[j])
        return (float(change) * self.lip_toward).astype(np.float32)


def plan_recall(row: dict[str, Any], runtime: Any, cfg: Any, memory: PresenterMemory, track: FaceTrack,
                index: np.ndarray, deltas: np.ndarray, fps: float, work: Path) -> tuple[MemoryMouth, dict]:
    """(the painter, figures for the results) of a dub row: targets, the recall path and its
    cross-fades, saved to ``recall.npz``."""
    crop, crop_lm = memory.reference_crop()
    predicted, r2, weights = speech_shapes(runtime.renderer, crop, crop_lm, deltas)
    samples = row_audio(row)
    phones, source = speech_phones(row, samples, bool(cfg.memory.hear_phones))
    targets = mouth_targets(memory, predicted, r2, samples, fps, float(cfg.memory.pause_s), phones,
                            float(cfg.memory.amplitude))
    poses = np.stack([head_pose(track.landmarks[int(i)]) if track.usable[int(i)] else np.zeros(3, np.float32)
                      for i in index])
    asked = frame_visemes(phones, (np.arange(len(index)) + 0.5) / fps)
    path = without_detours(recall_path(memory, targets.shapes, poses, targets.pause, cfg.memory, asked), memory,
                           targets.closed)
    np.savez(work / "recall.npz", path=path, memory_frames=memory.frames[path], targets=targets.shapes,
             pause=targets.pause, predicted=predicted, calibration_r2=r2)
    jumps = int(sum(not continues(memory, int(a), int(b)) for a, b in zip(path[:-1], path[1:])))
    own = memory.visemes if memory.visemes is not None else np.zeros(len(memory), np.int8)
    matched = (asked > 0) & (own[path] == asked)
    info = {"dub_phones": source, "dub_bilabials": sum(p.viseme == "PBM" for p in phones),
            "recall_phone_match": round(float(matched.sum() / max(1, (asked > 0).sum())), 3),
            "recall_jumps_per_s": round(jumps * fps / max(1, len(path)), 3), "recall_calibration_r2": round(r2, 3)}
    fades = crossfades(path, memory, int(cfg.memory.crossfade), targets.pause)
    reshape = str(cfg.memory.reshape)
    toward = None
    if reshape == "network":
        speech = ~targets.pause
        toward = lip_direction(weights, predicted[speech], targets.shapes[speech])
    mouth = MemoryMouth(memory, track, index, fades, float(cfg.feather), targets.shapes[:, 0],
                        float(cfg.memory.warp) if reshape != "none" else 0.0, toward)
    return mouth, info


def speech_phones(row: dict[str, Any], samples: np.ndarray, hear: bool) -> tuple[list, str]:
    """(phones of the new speech, where they came from): the align stage's ``words.json`` when the
    row's script was aligned ("script"); else, with ``dub.memory.hear_phones``, the phones of the
    words pocketsphinx hears ("heard", :mod:`stages.transcript.heard_phones`); else none."""
    words_json = row.get("words_json")
    if words_json and Path(str(words_json)).is_file():
        phones = read_phones(words_json)
        if phones:
            return phones, "script"
    if hear:
        from stages.transcript.heard_phones import heard_phones

        _, phones = heard_phones(samples)
        return phones, "heard" if phones else "none"
    return [], "none"


class MouthChoice:
    """Where a dub row's mouth comes from: ``mode`` (memory | model), why, and the memory."""

    def __init__(self, mode: str, reason: str, folder: Path | None = None, memory: PresenterMemory | None = None,
                 open_margin: float = 0.08):
        self.mode, self.reason, self.folder, self.memory = mode, reason, folder, memory
        self.open_margin = float(open_margin)

    def columns(self) -> dict[str, Any]:
        mem = self.memory
        return {"dub_mouth": self.mode, "dub_mouth_reason": self.reason,
                "presenter_memory": str(self.folder) if self.folder else None,
                "memory_frames": len(mem) if mem is not None else None,
                "memory_open_frames": mem.open_frames(self.open_margin) if mem is not None else None,
                "memory_build_s": mem.meta.get("build_s") if mem is not None else None,
                "memory_phones": mem.phones_source if mem is not None else None,
                "memory_phone_frames": int(np.count_nonzero(mem.visemes)) if mem is not None
                and mem.visemes is not None else None}


def _text(value: Any) -> str | None:
    """A manifest text cell, None when empty or missing (NaN from a spreadsheet)."""
    return value.strip() or None if isinstance(value, str) else None


def choose_mouth(row: dict[str, Any], cfg: Any, cache: Path, log=lambda s: None) -> MouthChoice:
    """``dub.mouth`` resolved for a dub row: ``model`` as asked; ``memory`` or ``auto`` build (or
    load) the footage's memory, and ``auto`` falls back to the model when it is not enough."""
    from stages.rendering.presenter_memory import cached_memory

    mode = str(cfg.mouth)
    if mode == "model":
        return MouthChoice("model", "dub.mouth=model")
    folder, memory = cached_memory(row["source_video"], str(row["source_rate"]), row["footage_track"],
                                   bool(row.get("source_has_audio")), cache, log,
                                   transcript=_text(row.get("source_transcript")))
    ok, why = enough_footage(memory, cfg.memory)
    if mode == "memory" and len(memory):
        return MouthChoice("memory", f"dub.mouth=memory ({why})", folder, memory, cfg.memory.open_margin)
    if ok:
        return MouthChoice("memory", f"auto: {why}", folder, memory, cfg.memory.open_margin)
    return MouthChoice("model", f"auto: the model draws the mouth: {why}", folder, memory,
                       cfg.memory.open_margin)
