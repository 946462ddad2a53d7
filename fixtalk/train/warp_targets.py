"""Dense warp and mouth-mask targets from landmark correspondences (a *choice* for synthetic data).

The decoder G renders by warping the source maps f^s_k with a flow and a mask predicted at every
level k (fixtalk.nets.decoder.ToFlow). With image losses alone a small model on a CPU takes very
long to discover the motion: it settles on near-zero flows and half-open masks and renders the
average face, soft and with a closed mouth. Synthetic driving frames are piecewise-affine warps of
one portrait (fixtalk.train.face_warp), so the backward map "driver pixel -> source pixel" is known
up to the control points; we rebuild it from the two frames' dlib-68 landmarks, a head ring that
follows the landmarks' similarity transform and the fixed image border, exactly as face_warp
builds the forward warp. Inside the driver's open inner-lip polygon the source has no counterpart:
elsewhere the target mask is 1 (the decoder copies the source; without it the mask turns into a
spatial gain that the decoder paints from the driver's latent, wrong in colour for a new face);
inside, optionally (``mask_mouth``), the two finest levels' mask is pulled to 0 (the decoder
generates the cavity; coarser levels stay free to warp dark source features into it).

Targets are in grid_sample's normalised coordinates (align_corners=False): a pixel centre x of the
S x S crop is u = (2 x + 1) / S - 1. At a decoder level of resolution r the target is the mean of
the S x S map over each r-cell, compared with tanh(logits[:, :2]) + identity_grid(r).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fixtalk.geometry import umeyama
from fixtalk.nets.decoder import identity_grid
from fixtalk.train.collective import batch_denominator
from fixtalk.train.face_warp import control_points, mouth_interior, separate_inner_lips, warp_maps

_RIGID = np.r_[17:48]  # brows, nose, eyes: follow the head, not the mouth


def _apply(mat: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ mat[:2, :2].T + mat[:2, 2]


def warp_target(src_lm: np.ndarray, drv_lm: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Backward map of the driver frame into the source frame and the driver's mouth interior.

    Returns ``flow`` (2, S, S) float32 normalised source coordinates (x, y) per driver pixel and
    ``mouth`` (1, S, S) float32 in [0, 1]."""
    src_lm = np.asarray(src_lm, np.float64)
    drv_lm = np.asarray(drv_lm, np.float64)
    ring_s, border = control_points(src_lm, size)
    ring_d = _apply(umeyama(src_lm[_RIGID], drv_lm[_RIGID]), ring_s)
    dst = np.concatenate([drv_lm, ring_d, border])
    src = np.concatenate([src_lm, ring_s, border])
    dst = separate_inner_lips(dst)  # Delaunay needs distinct points
    mx, my = warp_maps(src, dst, size, 1.0)
    flow = np.stack([(2 * mx + 1) / size - 1, (2 * my + 1) / size - 1]).astype(np.float32)
    return flow, mouth_interior(drv_lm, size, size)[None]


def warp_loss(flow_logits: list[torch.Tensor], flow: torch.Tensor, mouth: torch.Tensor,
              valid: torch.Tensor, w_flow: float, w_mask: float, w_mask_mouth: float = 0.0,
              offsets: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Supervise every decoder level's flow (L1 outside the open mouth) and mask (``w_mask``: 1
    outside the open mouth; ``w_mask_mouth``: 0 inside it at the two finest levels; L1 on sigmoid).
    ``valid`` (B,) bool selects items with targets (the others weigh nothing; every normaliser is
    the global batch's, :func:`fixtalk.train.collective.batch_denominator`). ``offsets``: the per-level self-flows of
    relative flow (B, r, r, 2); the displacement supervised is then the one rendered, f_d - f_s."""
    if not (w_flow or w_mask or w_mask_mouth):
        return {}
    v = valid.to(flow.dtype)[:, None, None, None]  # items without targets (zeros) weigh nothing
    n_valid = batch_denominator(v.sum())  # of the whole global batch in a data-parallel run
    if float(n_valid) == 0.0:
        return {}
    lf = lm = lmm = 0.0
    for k, logits in enumerate(flow_logits):
        r = logits.shape[-1]
        tgt = F.adaptive_avg_pool2d(flow, r) - identity_grid(r, logits.device, logits.dtype).permute(0, 3, 1, 2)
        m = F.adaptive_avg_pool2d(mouth, r) * v
        keep = (1.0 - m) * v
        disp = torch.tanh(logits[:, :2])
        if offsets is not None:
            disp = disp - offsets[k].permute(0, 3, 1, 2).to(disp.dtype)
        lf = lf + ((disp - tgt).abs() * keep).sum() / batch_denominator(2 * keep.sum()).clamp(min=1.0)
        mask = torch.sigmoid(logits[:, 2:3])
        lm = lm + (keep * (1.0 - mask)).sum() / (n_valid * r * r)
        if 2 * r >= flow.shape[-1]:  # the finest two levels generate the mouth; coarser ones may
            # warp dark source features into it
            lmm = lmm + (m * mask).sum() / batch_denominator(m.sum()).clamp(min=1.0)
    n = len(flow_logits)
    out = {}
    if w_flow:
        out["flow"] = w_flow * lf / n
    if w_mask:
        out["mask"] = w_mask * lm / n
    if w_mask_mouth:
        out["mask_mouth"] = w_mask_mouth * lmm / n
    return out


def copy_loss(rgb_levels: list[torch.Tensor], upsample, target: torch.Tensor, mouth: torch.Tensor,
              valid: torch.Tensor) -> torch.Tensor:
    """L1 between the finest level's own contribution, to_rgb_S(warped f_S) = rgb_S - up(rgb_S/2),
    and the driver outside its open mouth (dilated by 3 px). The finest source map is a pointwise
    function of the pixels (the encoder's first layer is 1x1), so this contribution can copy the
    warped source exactly, but only if the coarser levels add (almost) nothing there; they are left
    for what the source lacks, the mouth cavity. Without it the coarse levels paint a blurred,
    remembered face and the finest level only a correction."""
    own = rgb_levels[-1] - upsample(rgb_levels[-2])
    keep = (1.0 - F.max_pool2d(mouth, 7, 1, 3)) * valid.to(own.dtype)[:, None, None, None]
    err = (own - target).abs() * keep
    return err.sum() / batch_denominator(3 * keep.sum()).clamp(min=1.0)


def flow_diagnosis(renderer, clips: list, max_frames: int) -> dict:
    """The evaluation's (a) diagnosis (train.evaluate): PSNR of the source warped by the model's
    finest flow (as the renderer warps, relative flow included) and by the landmark warp of the two
    frames (the ceiling of a warping generator), and the flows' mean distance [px], over the same
    frames as the evaluation's reconstruction line (``clips``: train.data_format.Clip)."""
    from fixtalk.nets.decoder import DecoderLevels
    from fixtalk.pixel_warp import finest_flow

    def as_t(x):
        return torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).float() / 127.5 - 1

    def psnr(a, b):
        return 10 * np.log10(4.0 / float(((a - b) ** 2).mean((1, 2, 3)).clamp(min=1e-10).mean()))

    rows = {"psnr_own_flow": [], "psnr_landmark_warp": [], "flow_error_px": []}
    model, device = renderer.model, renderer.device
    size = model.cfg.size
    for clip in clips:
        n = clip.num_frames
        idx = np.unique(np.linspace(1, n - 1, min(max_frames, n - 1)).round().astype(int))
        state = renderer.source(np.array(clip.frames[0]))
        w = renderer.motion_weights(np.array(clip.frames[idx]))
        b = len(idx)
        levels = DecoderLevels()
        with torch.no_grad():
            model.decode(state.code.expand(b, -1), [f.expand(b, -1, -1, -1) for f in state.feats],
                         w["lip"], w["pose"], w["exp"], levels=levels, flow_offsets=state.flow_offsets,
                         source_motion=None if state.motion is None else state.motion.expand(b, -1))
        offset = levels.flow_offsets[-1]
        own = finest_flow(levels.flow_logits[-1].float(), None if offset is None else offset.float())
        target = torch.stack([torch.from_numpy(warp_target(clip.landmarks[0], clip.landmarks[i], size)[0])
                              for i in idx]).permute(0, 2, 3, 1).to(device)
        src = as_t(clip.frames[:1]).expand(b, -1, -1, -1).to(device)
        drv = as_t(clip.frames[idx]).to(device)
        for name, grid in (("psnr_own_flow", own), ("psnr_landmark_warp", target)):
            rows[name].append(psnr(F.grid_sample(src, grid, align_corners=False, padding_mode="border"), drv))
        rows["flow_error_px"].append(float((own - target).norm(dim=-1).mean()) * size / 2)
    return {k: float(np.mean(v)) for k, v in rows.items()}
