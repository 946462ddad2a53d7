"""Rendering a dub: the footage of a ``source_video`` row with the presenter's mouth re-rendered
to the row's speech, everything else the footage's own pixels.

Output frame j (at the footage's own frame rate r, ``round(duration * r)`` frames: exactly as
long as the speech) shows footage frame ``i_j`` (:func:`stages.media.footage.footage_index`,
``dub.extend``). Its lips are the 25 fps Audio2Lip weights (motion.npz) interpolated linearly at
the frame's time j / r, taken relative to Audio2Lip's resting mouth (``alpha_lip_rest``), scaled
by ``dub.lip_gain`` and added to the frame's own resting lips
(:meth:`fixtalk.inference.ClipRenderer.dub`). For a usable frame (:mod:`stages.face.track`):

1. its lower face is put at rest (:func:`stages.face.mouth_rest.rest_mouth`: the shot's reference
   frame's closed mouth, moved onto it by the rigid landmarks, at full resolution), and the frame
   is cut to the model's crop with its smoothed transform M_i;
2. the network renders the crop as its own source s_i with alpha_lip and the frame's own pose and
   expression (:meth:`fixtalk.inference.ClipRenderer.dub`), and the crop at rest (its own lips);
3. only the lower face (:func:`stages.media.paste.lower_face_mask` of the frame's landmarks, feathered by
   ``dub.feather``) is composited back, colour-matched, as the change the new lips make
   (:class:`stages.media.paste.LowerFaceComposite`), through the inverse of M_i
   (:func:`stages.media.paste.add_change`): eyes, hair, background and body keep their pixels.

That is ``dub.mouth=model``. With ``memory`` (:mod:`stages.rendering.memory_dub`) each usable
frame shows the presenter's own recalled mouth instead, painted at full resolution; with
``dub.memory.reshape=network`` the painted frame then takes step 1's place as the network's
source, driven by the Delta alpha_lip of the opening its recalled mouth still lacks.

Where the speech is silent alpha_lip is the network's resting mouth (the silence gate), so the
mouth closes even where the footage's presenter was talking. Frames whose face is lost, too small
or turned away are passed through unchanged and counted (``frames_passed_through``).
``dub_frames.npz`` records, per output frame, the footage frame shown and whether it was dubbed
(QC compares the output with the footage outside the mask).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from stages.base import ClipError
from stages.face.alignment import warp_to_crop
from stages.face.mouth_rest import rest_mouth
from stages.face.track import FaceTrack
from stages.media.av import FfmpegWriter, MediaError
from stages.media.footage import footage_frames, footage_index, read_frames, shot_references
from stages.media.paste import LowerFaceComposite, add_change
from stages.rendering.memory_dub import choose_mouth, plan_recall

#: Footage that pingpong must play backwards is buffered on disk as raw frames up to this size.
MAX_BUFFER_BYTES = 16 << 30


def lips_at(lip25: np.ndarray, n_out: int, fps: float) -> np.ndarray:
    """alpha_lip (n_out, d) at the output frames' times, linear between the 25 fps frames."""
    t = np.arange(n_out) * (25.0 / fps)
    lo = np.clip(np.floor(t).astype(int), 0, len(lip25) - 1)
    hi = np.clip(lo + 1, 0, len(lip25) - 1)
    w = (t - np.floor(t))[:, None].astype(np.float32)
    return (1 - w) * lip25[lo] + w * lip25[hi]


def frames_in_order(path: str, rate: str, index: np.ndarray, work: Path) -> Iterator[np.ndarray]:
    """Footage frames ``index[0], index[1], ...``: streamed while the index only moves forward
    (a cut, ``loop`` restarts, ``freeze`` repeats); with backward steps (``pingpong``) the
    footage is buffered once in a raw file under ``work``."""
    backwards = bool(np.any(np.diff(index) == -1))
    if not backwards:
        yield from _forward(path, rate, index)
        return
    n = int(index.max()) + 1
    buffer, shape = work / "footage.raw", None
    try:
        with open(buffer, "wb") as fh:
            for chunk in footage_frames(path, rate):
                shape = chunk.shape[1:]
                if (n * int(np.prod(shape))) > MAX_BUFFER_BYTES:
                    raise ClipError(f"the footage is too large to play back and forth ({n} frames of "
                                    f"{shape[1]}x{shape[0]}); use --set dub.extend=loop or freeze, or "
                                    "give a footage as long as the speech", field="source_video",
                                    error_type="FootageTooLarge")
                fh.write(np.ascontiguousarray(chunk).tobytes())
        frames = np.memmap(buffer, np.uint8, "r").reshape(-1, *shape)
        for i in index:
            yield np.array(frames[min(int(i), len(frames) - 1)])
        del frames
    finally:
        buffer.unlink(missing_ok=True)


def _forward(path: str, rate: str, index: np.ndarray) -> Iterator[np.ndarray]:
    stream, pos, frame = None, -1, None
    for i in index:
        i = int(i)
        if stream is None or i < pos:
            stream, pos, chunk_frames = footage_frames(path, rate), -1, iter(())
        while pos < i:
            nxt = next(chunk_frames, None)
            if nxt is None:
                chunk = next(stream, None)
                if chunk is None:
                    break
                chunk_frames = iter(chunk)
                continue
            frame, pos = nxt, pos + 1
        yield np.array(frame)


@dataclass
class DubPlan:
    """One dub being rendered: its footage ``track``, the footage frame ``index`` and lip deltas
    ``lips`` of every output frame, each shot's reference (frame, landmarks), and which output
    frames were ``dubbed``."""

    track: FaceTrack
    index: np.ndarray
    lips: np.ndarray
    references: dict[int, tuple[np.ndarray, np.ndarray]]
    dubbed: np.ndarray
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # recalled frames' lower-face masks


class DubRenderer:
    """Renders one dub row (see the module docstring); ``runtime`` is the stage's model runtime."""

    def __init__(self, runtime: Any, cfg: Any, crf: int, preset: str):
        self.runtime, self.cfg, self.crf, self.preset = runtime, cfg, int(crf), str(preset)

    def render(self, row: dict[str, Any], work: Path, memory_cache: Path) -> dict[str, Any]:
        track = FaceTrack.load(row["footage_track"])
        rate = str(row["source_rate"])
        fps = float(Fraction(rate))
        n_out = max(1, int(round(float(row["audio_duration_s"]) * fps)))
        choice = choose_mouth(row, self.cfg, memory_cache)
        with np.load(row["motion_path"]) as motion:
            deltas = lips_at(motion["alpha_lip"], n_out, fps) - motion["alpha_lip_rest"]
        gain = self.lip_gain(row) if choice.mode == "model" else None
        lips = deltas * (gain or 0.0)
        width, height = track.width // 2 * 2, track.height // 2 * 2
        refs = shot_references(track) if choice.mode == "model" else {}  # the model's rested mouths
        ref_frames = read_frames(row["source_video"], rate, set(refs.values())) if refs else {}
        plan = DubPlan(track, footage_index(len(track), n_out, str(self.cfg.extend)), lips,
                       {shot: (ref_frames[i][:height, :width], track.landmarks[i]) for shot, i in refs.items()},
                       np.zeros(n_out, bool))
        mouth, recall_info = None, {}
        if choice.mode == "memory":
            mouth, recall_info = plan_recall(row, self.runtime, self.cfg, choice.memory, track, plan.index,
                                             deltas, fps, work)
        path = work / "video.mp4"
        pending: list[tuple[int, np.ndarray]] = []
        try:
            with FfmpegWriter(path, width, height, fps=rate, crf=self.crf, preset=self.preset) as writer:
                for j, frame in enumerate(frames_in_order(row["source_video"], rate, plan.index, work)):
                    frame = frame[:height, :width]
                    if track.usable[plan.index[j]] and mouth is not None:
                        painted = mouth.paint(j, frame)
                        if mouth.lip_toward is None:
                            writer.write(painted)
                            plan.dubbed[j] = True
                            continue
                        frame = painted  # dub.memory.reshape=network: the network moves it on
                        plan.lips[j] = mouth.lip_residual(j)
                        plan.masks[j] = mouth.mask
                    if track.usable[plan.index[j]]:
                        pending.append((j, frame))
                        if len(pending) >= int(self.cfg.batch_size):
                            self._flush(plan, pending, writer)
                        continue
                    self._flush(plan, pending, writer)
                    writer.write(frame)
                self._flush(plan, pending, writer)
        except MediaError as exc:
            raise ClipError(str(exc), error_type="EncodeFailed") from exc
        dubbed = plan.dubbed
        np.savez(work / "dub_frames.npz", footage_index=plan.index, dubbed=dubbed)
        return {"video_path": str(path), "frames": int(writer.frames), "frames_dubbed": int(dubbed.sum()),
                "frames_passed_through": int(n_out - dubbed.sum()), "dub_extend": str(self.cfg.extend),
                "dub_frames": str(work / "dub_frames.npz"), "dub_lip_gain": gain, **choice.columns(), **recall_info}

    def lip_gain(self, row: dict[str, Any]) -> float:
        """``dub.lip_gain``, or (auto) 0.5 with weights fitted to the presenter, else 1.0."""
        if self.cfg.lip_gain is not None:
            return float(self.cfg.lip_gain)
        return 0.5 if row.get("adapted_checkpoint") else 1.0

    def _flush(self, plan: "DubPlan", pending: list[tuple[int, np.ndarray]], writer: FfmpegWriter) -> None:
        """Dub the ``pending`` (output index, footage frame) pairs as one network batch."""
        if not pending:
            return
        track, size, feather = plan.track, plan.track.size, float(self.cfg.feather)
        rows = [int(plan.index[j]) for j, _ in pending]
        rested, masks = [], []
        for (j, frame), i in zip(pending, rows):
            if j in plan.masks:  # a recalled mouth: its own lower face is the source
                rested.append(frame)
                masks.append(plan.masks.pop(j))
                continue
            reference, ref_lm = plan.references[int(track.shot[i])]
            closed, mask = rest_mouth(frame, track.landmarks[i], track.matrices[i], reference, ref_lm,
                                      size, feather)
            rested.append(closed)
            masks.append(mask)
        crops = np.stack([warp_to_crop(f, track.matrices[i], size) for f, i in zip(rested, rows)])
        driven, rest = self.runtime.renderer.dub(crops, plan.lips[[j for j, _ in pending]])
        for k, ((j, _), i) in enumerate(zip(pending, rows)):
            change = LowerFaceComposite(crops[k], rest[k], masks[k]).changes(driven[k][None])[0]
            writer.write(add_change(rested[k], change, track.matrices[i]))
            plan.dubbed[j] = True
        pending.clear()
