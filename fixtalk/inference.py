"""Clip rendering: a fast batched path and the per-frame reference-style path (same numbers).

Fast path (:meth:`ClipRenderer.render`):

* the source is encoded once (:meth:`ClipRenderer.source`), and its own bank weights are kept as
  the default pose/expression;
* the orthonormal basis Q is computed once (cached while the weights are unchanged);
* frames are decoded in batches of ``batch_size``;
* work whose result is never used is skipped: EEM's dead ``conv1``/``norm1`` branch, and, when the
  expression weights are constant over the clip (a label or the source's own), EEM itself is run
  once on the source maps instead of once per frame;
* output = round((clamp(x, -1, 1) + 1) / 2 * 255) as uint8 (no per-clip min-max stretching).

Reference path (:meth:`ClipRenderer.render_reference`): what the EDTalk demos do, frame by frame
at batch 1, re-encoding the source and recomputing Q each frame, EEM's dead branch included.
Both give the same images up to float32 rounding (max abs diff <= 1e-4 before uint8).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .model import FixTalk
from .nets.audio2lip import smooth_time
from .config import PRECISIONS, PixelWarp, SilenceGate
from .nets.decoder import DecoderLevels
from .pixel_warp import finest_flow, pixel_warp
from .nets.audio_features import mel_windows, samples_per_frame, speech_gate


@dataclass
class SourceState:
    """The encoded source: image (1, 3, S, S) in [-1, 1], code f^s_6, maps, motion code z^s, its
    own bank weights (1, n), for FixTalk its motion latent Q alpha_s (EDI's z_s), and with
    relative flow the per-level self-flow subtracted from every driven flow."""

    image: torch.Tensor
    code: torch.Tensor
    feats: list[torch.Tensor]
    z: torch.Tensor
    alpha_lip: torch.Tensor
    alpha_pose: torch.Tensor
    alpha_exp: torch.Tensor | None
    motion: torch.Tensor | None
    flow_offsets: list[torch.Tensor] | None = None


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8 via round((clamp + 1) / 2 * 255)."""
    y = ((x.detach().float().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


#: Frames per network call when none is given. On CPU, batch 1: the fast path folds each frame's
#: style into the convolution weights (one pass over every activation instead of five, see
#: :mod:`fixtalk.nets.fused`) and a 256-px frame's activations stay in the cache; larger batches
#: were measured slower per frame on 2-core x86 (docs/performance.md, Rendering). On CUDA, 8:
#: a GPU needs the batch to fill its cores.
DEFAULT_BATCH = {"cpu": 1, "cuda": 8}


def default_batch_size(device: str | torch.device) -> int:
    """The fast path's default frames per call on ``device`` (:data:`DEFAULT_BATCH`)."""
    return DEFAULT_BATCH.get(torch.device(device).type, 1)


def check_precision(precision: str, device: str | torch.device) -> None:
    """ValueError unless ``precision`` is one of :data:`PRECISIONS` and runs on ``device``
    (float16 autocast needs CUDA; CPU autocast supports bfloat16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float16" and torch.device(device).type != "cuda":
        raise ValueError("precision float16 needs a CUDA device (CPU autocast has no float16); "
                         "use bfloat16 or float32 on CPU")


class ClipRenderer:
    """Renders clips with one model. ``precision``: "float32" (default), "bfloat16" (autocast on
    CPU or CUDA) or "float16" (autocast, CUDA only); the frames come back float32 either way.
    ``batch_size``: frames per network call; None = :func:`default_batch_size` of the device.
    ``relative_flow``: subtract the source's self-flow from every flow
    (:func:`fixtalk.nets.decoder.self_flow_offsets`); False renders EDTalk's decoder exactly.
    ``pixel_warp``: the source's own pixels where the generator only moves them
    (:mod:`fixtalk.pixel_warp`); None (or disabled) gives the generator's frame alone."""

    def __init__(self, model: FixTalk, device: str | torch.device = "cpu", batch_size: int | None = None,
                 precision: str = "float32", relative_flow: bool = False,
                 pixel_warp: PixelWarp | None = None):
        self.device = torch.device(device)
        batch_size = default_batch_size(self.device) if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.dtype = next(model.parameters()).dtype
        self.batch_size = batch_size
        self.precision = precision
        self.size = model.cfg.size
        self.relative_flow = relative_flow
        self.pixel_warp = pixel_warp if pixel_warp is not None and pixel_warp.enabled else None

    # ------------------------------------------------------------------ helpers
    def _ctx(self):
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.precision))

    def _images(self, arr: np.ndarray, what: str, single: bool) -> torch.Tensor:
        s = self.size
        want = f"({s}, {s}, 3)" if single else f"(N, {s}, {s}, 3)"
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{what}: expected a numpy uint8 array {want} RGB, got {type(arr).__name__}")
        if arr.dtype != np.uint8:
            raise ValueError(f"{what}: expected dtype uint8 (0-255 RGB), got {arr.dtype}")
        nd = 3 if single else 4
        grey = arr.ndim == nd - 1 and arr.shape[-1] != 3
        if grey or (arr.ndim == nd and arr.shape[-1] != 3):
            got = "1 channel (grey)" if grey else f"{arr.shape[-1]} channels"
            raise ValueError(f"{what}: expected shape {want} with 3 channels (RGB), got {got} "
                             f"in shape {arr.shape}; convert to RGB first")
        if arr.ndim != nd or arr.shape[-3:] != (s, s, 3) or (not single and arr.shape[0] == 0):
            raise ValueError(f"{what}: expected shape {want} (RGB, resized/cropped to the model "
                             f"size {s}), got {arr.shape}")
        # read-only arrays (np.load, PIL views) are copied: torch wants writable memory
        if not (arr.flags.writeable and arr.flags.c_contiguous):
            arr = np.array(arr, order="C")
        t = torch.from_numpy(arr).to(self.device)
        t = t.unsqueeze(0) if single else t
        t = t.permute(0, 3, 1, 2).to(self.dtype) / 255.0
        return (t - 0.5) / 0.5

    def _weights(self, a, n: int, what: str, t: int | None) -> torch.Tensor:
        x = a if torch.is_tensor(a) else torch.as_tensor(np.asarray(a), device=self.device)
        if x.ndim == 1:
            x = x.unsqueeze(0)
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(f"{what}: expected shape (T, {n}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} contains NaN or Inf")
        if t is not None and x.shape[0] not in (1, t):
            raise ValueError(f"{what}: {x.shape[0]} rows, expected {t} (one per frame) or 1")
        return x.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ inputs
    @torch.no_grad()
    def source(self, image_uint8: np.ndarray) -> SourceState:
        """Encode the source portrait (S, S, 3) uint8 RGB once."""
        img = self._images(image_uint8, "source image", single=True)
        return self._encode_source(img)

    @torch.no_grad()
    def source_tensor(self, image: torch.Tensor) -> SourceState:
        """Encode a source given as a float tensor (1, 3, S, S) in [-1, 1] (e.g. from a test or
        another torch pipeline); same checks as :meth:`FixTalk.encode`."""
        self.model.check_image(image)
        if image.shape[0] != 1:
            raise ValueError(f"source_tensor: expected one image (1, 3, S, S), got {tuple(image.shape)}")
        return self._encode_source(image.to(device=self.device, dtype=self.dtype))

    def _encode_source(self, img: torch.Tensor) -> SourceState:
        m = self.model
        with self._ctx():
            code, feats = m.encode(img)
            z = m.motion_code((code, feats))
            a_lip, a_pose, a_exp = m.bank_weights(z)
            motion = m.motion_latents(a_lip, a_pose, a_exp)[0] if m.edi is not None else None
            offsets = None
            if self.relative_flow:
                offsets = m.self_flow(code, list(feats), a_lip, a_pose, a_exp, source_motion=motion)
        return SourceState(img, code, list(feats), z, a_lip, a_pose, a_exp, motion, offsets)

    @torch.no_grad()
    def lip_weights(self, wave_16k: np.ndarray, chunk: int = 256, smoothing_sigma: float | None = None,
                    silence: SilenceGate | None = SilenceGate()) -> torch.Tensor:
        """alpha_lip (T, lip_dim) from a 16 kHz mono float waveform: Audio2Lip, then the silence
        gate (``silence``; None = the network's raw output), then a temporal Gaussian of
        ``smoothing_sigma`` frames (default: the model's ``audio.smoothing_sigma``; 0 = none).

        With the gate on, the Gaussian smooths the deviation from the rest weights, so the
        zero padding of :func:`smooth_time` eases the first and last frames toward the resting
        mouth instead of toward alpha = 0 (EDTalk's smoothing, kept when the gate is off)."""
        wave = np.asarray(wave_16k)
        a = self.model.cfg.audio
        mel = torch.from_numpy(mel_windows(wave, a)).to(self.device, self.dtype)
        lip = torch.cat([self.model.audio2lip(mel[i:i + chunk]) for i in range(0, len(mel), chunk)])
        rest = torch.zeros_like(lip[:1])
        if silence is not None and silence.enabled:
            rest = self.rest_lip()
            g = torch.from_numpy(speech_gate(wave, a, silence)).to(lip)[:, None]
            lip = rest + g * (lip - rest)
        sigma = a.smoothing_sigma if smoothing_sigma is None else float(smoothing_sigma)
        if sigma <= 0:
            return lip
        k = a.smoothing_k if sigma == a.smoothing_sigma else max(3, 2 * int(np.ceil(2 * sigma)) + 1)
        return rest + smooth_time(lip - rest, k, sigma)

    @torch.no_grad()
    def rest_lip(self) -> torch.Tensor:
        """Audio2Lip's alpha_lip (1, lip_dim) on digital silence: the mouth at rest."""
        a = self.model.cfg.audio
        quiet = np.zeros(samples_per_frame(a), dtype=np.float32)
        return self.model.audio2lip(torch.from_numpy(mel_windows(quiet, a)).to(self.device, self.dtype))

    @torch.no_grad()
    def motion_weights(self, frames_uint8: np.ndarray) -> dict[str, torch.Tensor | None]:
        """Bank weights of driving frames (N, S, S, 3) uint8: {'lip', 'pose', 'exp'}."""
        imgs = self._images(frames_uint8, "driving frames", single=False)
        parts = []
        for i in range(0, len(imgs), self.batch_size):
            with self._ctx():
                parts.append(self.model.bank_weights(self.model.motion_code(imgs[i:i + self.batch_size])))
        cat = lambda j: None if parts[0][j] is None else torch.cat([p[j] for p in parts]).float()  # noqa: E731
        return {"lip": cat(0), "pose": cat(1), "exp": cat(2)}

    @torch.no_grad()
    def dub(self, crops_uint8: np.ndarray, lip_delta) -> tuple[np.ndarray, np.ndarray]:
        """Footage frames re-rendered with new lips: each crop (N, S, S, 3) uint8 is its own
        source s_t (its mouth at rest), driven by its own lip weights plus ``lip_delta``
        (N, lip_dim): alpha_lip = alpha^s_lip + (alpha^a_t - alpha^a_rest), Audio2Lip's output
        relative to its resting mouth (relative motion transfer, as FOMM's relative mode), with
        its own pose and expression weights (alpha^s_pose, alpha^s_exp), so only the mouth moves
        and a zero delta (silence) renders the source as it is. Returns (driven, rest): the
        driven frames and each source rendered with its own weights (with relative flow, the
        generator's reconstruction of s_t), both (N, S, S, 3) uint8."""
        imgs = self._images(crops_uint8, "footage crops", single=False)
        delta = self._weights(lip_delta, self.model.cfg.lip_dim, "lip_delta", len(imgs))
        driven, rest = [], []
        for i in range(0, len(imgs), self.batch_size):
            state = self._encode_source(imgs[i:i + self.batch_size])
            own = (state.alpha_pose, state.alpha_exp)
            lip = state.alpha_lip + delta[i:i + self.batch_size]
            driven += [to_uint8(x) for x in self.render_float(state, lip, *own)]
            rest += [to_uint8(x) for x in self.render_float(state, state.alpha_lip, *own)]
        return np.concatenate(driven), np.concatenate(rest)

    def _plan(self, state: SourceState, alpha_lip, alpha_pose, alpha_exp):
        m = self.model
        lip = self._weights(alpha_lip, m.cfg.lip_dim, "alpha_lip", None)
        t = lip.shape[0]
        pose = state.alpha_pose if alpha_pose is None else self._weights(
            alpha_pose, m.cfg.pose_dim, "alpha_pose", t)
        exp = None
        if m.has_exp:
            exp = state.alpha_exp if alpha_exp is None else self._weights(
                alpha_exp, m.cfg.exp_dim, "alpha_exp", t)
        expand = lambda x: None if x is None else (x.expand(t, -1) if x.shape[0] == 1 else x)  # noqa: E731
        return t, lip, expand(pose.to(self.dtype)), expand(None if exp is None else exp.to(self.dtype))

    # ------------------------------------------------------------------ fast path
    @torch.no_grad()
    def render_float(self, state: SourceState, alpha_lip, alpha_pose=None, alpha_exp=None
                     ) -> Iterator[torch.Tensor]:
        """Raw frames (b, 3, S, S) float, batched; see the module docstring."""
        m = self.model
        t, lip, pose, exp = self._plan(state, alpha_lip, alpha_pose, alpha_exp)
        feats = list(state.feats)
        edi_k = m.edi_index
        premod: frozenset[int] = frozenset()
        if exp is not None and bool((exp == exp[:1]).all()):
            # constant expression: EEM once on the source maps (not on the EDI level, whose map
            # changes per frame and is modulated by the decoder as usual)
            premod = frozenset(k for k in range(len(feats)) if k != edi_k)
        m.dec.set_reference_cost(False)
        with self._ctx():
            if premod:
                e = m.motion_latents(lip[:1], pose[:1], exp[:1])[1]
                feats = [m.dec.fineadainresblock[k](f, e) if k in premod else f
                         for k, f in enumerate(feats)]
            for i in range(0, t, self.batch_size):
                sl = slice(i, min(i + self.batch_size, t))
                b = sl.stop - sl.start
                fb = [f.expand(b, -1, -1, -1) for f in feats]
                motion, e = m.motion_latents(lip[sl], pose[sl], None if exp is None else exp[sl])
                if m.edi is not None:
                    fb[edi_k] = m.edi(fb[edi_k], motion, state.motion.expand(b, -1)).feature
                levels = DecoderLevels() if self.pixel_warp else None
                img = m.dec(state.code.expand(b, -1) + motion, fb, e, premodulated=premod,
                            flow_offsets=state.flow_offsets, levels=levels, fused=True)
                yield self._finish(img, state, levels)

    def _finish(self, img: torch.Tensor, state: SourceState, levels: DecoderLevels | None) -> torch.Tensor:
        """float32 frames; with ``pixel_warp``, gated with the source warped by the finest flow."""
        img = img.float()
        if levels is None:
            return img
        offset = levels.flow_offsets[-1]
        grid = finest_flow(levels.flow_logits[-1].float(), None if offset is None else offset.float())
        return pixel_warp(img, state.image.float(), grid, self.pixel_warp)

    def render(self, state: SourceState, alpha_lip, alpha_pose=None, alpha_exp=None
               ) -> Iterator[np.ndarray]:
        """uint8 frames (b, S, S, 3). alpha_lip (T, lip_dim); alpha_pose (T|1, pose_dim) or None
        (the source's pose); alpha_exp (T|1, exp_dim) or None (the source's expression)."""
        for x in self.render_float(state, alpha_lip, alpha_pose, alpha_exp):
            yield to_uint8(x)

    # ------------------------------------------------------------------ reference path
    @torch.no_grad()
    def render_reference_float(self, state: SourceState, alpha_lip, alpha_pose=None,
                               alpha_exp=None) -> Iterator[torch.Tensor]:
        """Per frame, batch 1: re-encode the source, recompute Q, full EEM (dead branch too)."""
        m = self.model
        t, lip, pose, exp = self._plan(state, alpha_lip, alpha_pose, alpha_exp)
        m.dec.set_reference_cost(True)
        try:
            for i in range(t):
                m._basis.clear()
                src = self._encode_source(state.image)
                a_exp = None if exp is None else exp[i:i + 1]
                levels = DecoderLevels() if self.pixel_warp else None
                with self._ctx():
                    img = m.decode(src.code, src.feats, lip[i:i + 1], pose[i:i + 1], a_exp,
                                   source_motion=src.motion, flow_offsets=src.flow_offsets, levels=levels)
                yield self._finish(img, src, levels)
        finally:
            m.dec.set_reference_cost(False)
            m._basis.clear()

    def render_reference(self, state: SourceState, alpha_lip, alpha_pose=None, alpha_exp=None
                         ) -> Iterator[np.ndarray]:
        for x in self.render_reference_float(state, alpha_lip, alpha_pose, alpha_exp):
            yield to_uint8(x)
