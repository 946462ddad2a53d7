"""Loss computation of each training stage (one batch -> weighted terms).

Each ``*_losses(ctx, batch, stage)`` returns ``(terms, fakes)``: ``terms`` maps a loss name to a
weighted scalar (their sum is minimised), ``fakes`` are generated images for the discriminator.
Notation: I^s source, I^d driver, alpha_lip/pose/exp bank weights, Q the orthonormal basis.

* base: I^s rendered with all motion of I^d reconstructs I^d (L1 + perceptual [+ GAN]).
* lip_pose (EDTalk 5.3): pairs (a, b) = (item i, item i + B/2), :func:`partner`. Composites b_a (b with a's mouth) and
  a_b (a with b's mouth). Self: render a from (lip a, pose a); cross: lip from b_a, pose from a_b
  must reconstruct a too. Latent consistency exp(-cos) between the cross and self lip and pose
  latents (Q_lip alpha_lip, Q_pose alpha_pose).
* exp (EDTalk 5.4, "complementary self-reconstruction"): lip and pose weights of I^d come from the
  frozen MLN/PLN (no gradient); only the expression head/bank and EEM learn what is left.
* fixtalk: base terms + L_dis(z^s, z^d) + L_d-mem + L_align (fixtalk.losses).
* audio2lip (EDTalk 5.5): Audio2Lip(mel) regresses the lip weights the frozen encoder gives the
  driving frames (MSE), plus 0.1 x MSE of temporal differences, plus the image loss of the render
  with predicted lip and the driver's pose/expression.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from fixtalk import losses as fx_losses
from fixtalk.config import StageConfig
from fixtalk.nets.decoder import DecoderLevels
from fixtalk.train.collective import batch_denominator
from fixtalk.train.composite import mouth_swap
from fixtalk.train.data_format import HEAD_TRACKS
from fixtalk.train.losses import contour_l1, l1, latent_consistency, mouth_l1
from fixtalk.train.warp_targets import copy_loss, warp_loss


@dataclass
class StepContext:
    model: torch.nn.Module
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    relative_flow: bool = False  # TrainConfig.relative_flow: every render subtracts its self-flow


def image_terms(ctx: StepContext, fake: torch.Tensor, real: torch.Tensor, st: StageConfig,
                prefix: str = "", landmarks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    out = {}
    if st.l1:
        out[prefix + "l1"] = st.l1 * l1(fake, real)
    if st.mouth and landmarks is not None:
        out[prefix + "mouth"] = st.mouth * mouth_l1(fake, real, landmarks)
    if st.contour and landmarks is not None:
        out[prefix + "contour"] = st.contour * contour_l1(fake, real, landmarks)
    if st.perceptual:
        out[prefix + "perc"] = st.perceptual * ctx.perceptual(fake, real)
    return out


def wants_warp(st: StageConfig) -> bool:
    """Whether a stage needs the dataset's warp targets (window-1 stages with flow/mask/copy weights)."""
    return st.window == 1 and bool(st.flow or st.mask or st.mask_mouth or st.copy)


def warp_terms(model, levels: DecoderLevels | None, batch: dict, st: StageConfig) -> dict[str, torch.Tensor]:
    """*Choice* for synthetic data: flow and mask supervision of every decoder level and the
    finest level's copy term (fixtalk.train.warp_targets); empty without targets. The offsets
    that render subtracted from its flows (relative flow's f_s, recorded in ``levels``) are taken
    into account: the flow term supervises the displacement rendered, f_d - f_s."""
    if levels is None or "flow" not in batch:
        return {}
    offsets = levels.flow_offsets if any(o is not None for o in levels.flow_offsets) else None
    terms = warp_loss(levels.flow_logits, batch["flow"], batch["mouth_mask"], batch["warp_valid"],
                      st.flow, st.mask, st.mask_mouth, offsets=offsets)
    if st.copy:
        terms["copy"] = st.copy * copy_loss(levels.rgb, model.dec.to_rgbs[-1].upsample,
                                            batch["driving"][:, 0], batch["mouth_mask"], batch["warp_valid"])
    return terms


def _levels(st: StageConfig) -> DecoderLevels | None:
    return DecoderLevels() if wants_warp(st) else None


def _offsets(ctx: StepContext, enc_s, z_s, src_motion):
    """Relative flow's per-level self-flow of the source (with gradient), or None."""
    if not ctx.relative_flow:
        return None
    return ctx.model.self_flow(enc_s[0], enc_s[1], *ctx.model.bank_weights(z_s),
                               source_motion=src_motion, grad=True)


def _render(ctx: StepContext, source, driver, alpha=None, source_enc=None, driver_enc=None, levels=None):
    """Render ``source`` with the motion of ``driver`` (or given alphas); returns image, alphas, aux."""
    model = ctx.model
    enc_s = model.encode(source) if source_enc is None else source_enc
    enc_d = model.encode(driver) if driver_enc is None else driver_enc
    z_s, z_d = model.motion_code(enc_s), model.motion_code(enc_d)
    a_lip, a_pose, a_exp = model.bank_weights(z_d) if alpha is None else alpha
    src_motion = model.source_motion(z_s) if model.edi is not None else None
    offsets = _offsets(ctx, enc_s, z_s, src_motion)
    image, aux = model.decode(enc_s[0], enc_s[1], a_lip, a_pose, a_exp, source_motion=src_motion,
                              driver_feats=enc_d[1] if model.training else None, levels=levels,
                              return_aux=True, flow_offsets=offsets)
    return image, (a_lip, a_pose, a_exp), {"z_s": z_s, "z_d": z_d, "self_flow": offsets, **aux}


def _tied(weights: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """MSE of the leading weights to a known track (rows with a NaN, i.e. real clips, skipped;
    every worker of a data-parallel run takes the same branch)."""
    ok = torch.isfinite(target).all(1, keepdim=True)
    err = torch.where(ok, weights[:, :target.shape[1]] - torch.nan_to_num(target).to(weights.dtype), 0.0) ** 2
    count = batch_denominator(ok.sum() * float(target.shape[1]))  # of the global batch (data-parallel)
    return None if float(count) == 0.0 else err.sum() / count


def track_term(alpha_lip: torch.Tensor, batch: dict, st: StageConfig,
               alpha_pose: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """*Choice* for synthetic data (known motion tracks; NaN for real clips, which are skipped):
    tie the first two lip weights to the mouth opening and width, so the lip bank's leading
    directions mean "open" and "wide" from the start and the decoder gets a clean, strong signal;
    with ``pose_track``, likewise the pose weights to the head's six tracks (yaw, pitch, roll,
    scale, shift x / y; data_format.HEAD_TRACKS, each over its amplitude), so that a sideways
    shift and a turn, which both move the nose, are told apart (docs/model_card.md)."""
    out = {}
    if st.track and "mouth_open" in batch:
        target = torch.stack([4.0 * batch["mouth_open"][:, 0], 4.0 * (batch["mouth_width"][:, 0] - 1.0)], 1)
        loss = _tied(alpha_lip, target)
        if loss is not None:
            out["track"] = st.track * loss
    if st.pose_track and alpha_pose is not None and "head" in batch:
        centre, amplitude = (torch.tensor(v, device=alpha_pose.device) for v in zip(*HEAD_TRACKS.values()))
        k = min(alpha_pose.shape[1], len(HEAD_TRACKS))
        loss = _tied(alpha_pose, ((batch["head"][:, 0] - centre) / amplitude)[:, :k])
        if loss is not None:
            out["pose_track"] = st.pose_track * loss
    return out


def partial_drive(model, source_enc, driver_enc, drive: torch.Tensor):
    """Bank weights for clips where only some motion changes (``drive`` per item: 0 all, 1 the
    head pose only, 2 the lips only): the banks the clip does not move keep the *source's*
    weights, so I^s rendered with them must reproduce I^d only if each bank carries its own
    motion (what pose-only and audio-only driving ask of the model). Returns the (lip, pose, exp)
    weights to render with and both frames' own weights (a_s, a_d) for :func:`invariance_term`."""
    a_s = model.bank_weights(model.motion_code(source_enc))
    a_d = model.bank_weights(model.motion_code(driver_enc))
    pose_only, lip_only = (drive == 1)[:, None], (drive == 2)[:, None]
    a_lip = torch.where(pose_only, a_s[0], a_d[0])
    a_pose = torch.where(lip_only, a_s[1], a_d[1])
    a_exp = None if a_d[2] is None else torch.where(pose_only | lip_only, a_s[2], a_d[2])
    return (a_lip, a_pose, a_exp), (a_s, a_d)


def invariance_term(a_s, a_d, drive: torch.Tensor, st: StageConfig) -> dict[str, torch.Tensor]:
    """*Choice* for partial clips (``invariance``): a bank the clip does not move must read the
    same weights on the driver as on the source: the lip (and expression) weights of a pose-only
    frame, the pose weights of a lips-only frame. Measured on the shipped model, the lip bank
    predicts the head's yaw better than the pose bank does (leave-one-clip-out R^2 0.92 vs 0.57),
    so a pose video's yaw never reaches the render (docs/model_card.md)."""
    if not st.invariance:
        return {}
    pose_only, lip_only = (drive == 1).float()[:, None], (drive == 2).float()[:, None]
    loss = (pose_only * (a_d[0] - a_s[0]) ** 2).mean() + (lip_only * (a_d[1] - a_s[1]) ** 2).mean()
    if a_d[2] is not None:
        loss = loss + (pose_only * (a_d[2] - a_s[2]) ** 2).mean()
    return {"invariance": st.invariance * loss}


def base_losses(ctx: StepContext, batch: dict, st: StageConfig):
    src, drv = batch["source"], batch["driving"][:, 0]
    levels = _levels(st)
    enc_s, enc_d = ctx.model.encode(src), ctx.model.encode(drv)
    alpha, banks = None, None  # every bank from the driver ...
    if "drive" in batch and bool((batch["drive"] != 0).any()):  # ... unless a clip moves only some
        alpha, banks = partial_drive(ctx.model, enc_s, enc_d, batch["drive"])
    image, alpha, aux = _render(ctx, src, drv, alpha, enc_s, enc_d, levels)
    terms = image_terms(ctx, image, drv, st, landmarks=batch["landmarks"][:, 0])
    if banks is not None:
        terms.update(invariance_term(*banks, batch["drive"], st))
    terms.update(track_term(alpha[0], batch, st, alpha[1]))
    terms.update(warp_terms(ctx.model, levels, batch, st))
    terms.update(still_flow_term(aux["self_flow"], st))
    return terms, [image]


def still_flow_term(self_flow: list[torch.Tensor] | None, st: StageConfig) -> dict[str, torch.Tensor]:
    """*Choice* with relative flow: the subtraction f_d - f_s is first order, so the self-flow f_s
    must stay a small bias; mean |f_s| over every level (grid units) keeps it small."""
    if not st.still_flow or not self_flow:
        return {}
    return {"still_flow": st.still_flow * torch.stack([f.abs().mean() for f in self_flow]).mean()}


def partner(x: torch.Tensor) -> torch.Tensor:
    """The lip_pose partner b of each item a: the item half a batch away (items i and i + B/2
    swap places). *Choice*: with the rank-strided shares of a data-parallel run
    (:mod:`fixtalk.train.sharding`) each worker's partners are the single-process ones whenever
    the per-worker batch is even, so the stage does not depend on the number of workers."""
    return x.roll(x.shape[0] // 2, 0) if x.shape[0] > 1 else x


def lip_pose_losses(ctx: StepContext, batch: dict, st: StageConfig):
    model = ctx.model
    src, drv, lm = batch["source"], batch["driving"][:, 0], batch["landmarks"][:, 0]
    drv_b, lm_b = partner(drv), partner(lm)
    with torch.no_grad():
        b_with_a_mouth = mouth_swap(drv, lm, drv_b, lm_b)
        a_with_b_mouth = mouth_swap(drv_b, lm_b, drv, lm)
    enc_s, enc_d = model.encode(src), model.encode(drv)
    levels = _levels(st)
    self_img, (l_s, p_s, e_s), aux = _render(ctx, src, drv, source_enc=enc_s, driver_enc=enc_d,
                                             levels=levels)
    lip_w = model.bank_weights(model.motion_code(model.encode(b_with_a_mouth)))[0]
    _, pose_w, exp_w = model.bank_weights(model.motion_code(model.encode(a_with_b_mouth)))
    cross_img, _, _ = _render(ctx, src, drv, alpha=(lip_w, pose_w, e_s), source_enc=enc_s, driver_enc=enc_d)
    terms = image_terms(ctx, self_img, drv, st, "self_", landmarks=lm)
    terms.update(warp_terms(ctx.model, levels, batch, st))
    terms.update(image_terms(ctx, cross_img, drv, st, "cross_", landmarks=lm))
    if st.latent:
        lat_self = model.partial_latents(l_s, p_s)
        lat_cross = model.partial_latents(lip_w, pose_w)
        terms["latent"] = st.latent * (latent_consistency(lat_cross["lip"], lat_self["lip"].detach())
                                       + latent_consistency(lat_cross["pose"], lat_self["pose"].detach()))
    return terms, [self_img, cross_img]


def exp_losses(ctx: StepContext, batch: dict, st: StageConfig):
    model = ctx.model
    src, drv = batch["source"], batch["driving"][:, 0]
    with torch.no_grad():  # E, EMI, fc, MLN, PLN are frozen in this stage
        enc_d = model.encode(drv)
        z_d = model.motion_code(enc_d)
        a_lip, a_pose, _ = model.bank_weights(z_d)
    a_exp = model.bank_weights(z_d)[2]  # ELN learns what lip and pose leave unexplained
    image, _, _ = _render(ctx, src, drv, alpha=(a_lip, a_pose, a_exp), driver_enc=enc_d)
    return image_terms(ctx, image, drv, st, landmarks=batch["landmarks"][:, 0]), [image]


def fixtalk_losses(ctx: StepContext, batch: dict, st: StageConfig):
    model = ctx.model
    src, drv = batch["source"], batch["driving"][:, 0]
    levels = _levels(st)
    out = model(src, drv, levels=levels, relative_flow=ctx.relative_flow)
    terms = image_terms(ctx, out.image, drv, st, landmarks=batch["landmarks"][:, 0])
    terms.update(track_term(out.alpha_lip, batch, st))
    terms.update(warp_terms(ctx.model, levels, batch, st))
    cfg = model.cfg
    if model.emi is not None and st.dis:
        terms["dis"] = st.dis * fx_losses.dis_loss(out.z_s, out.z_d, cfg.emi.margin)
    edi = out.edi
    if edi is not None and edi.token_d is not None:
        if st.d_mem:
            terms["d_mem"] = st.d_mem * fx_losses.d_mem_loss(edi.token_d, edi.token_d_read, cfg.edi.d_mem_kind)
        if st.align:
            terms["align"] = st.align * fx_losses.align_loss(edi.addr_ms, edi.addr_d, cfg.edi.align_detach_target)
    return terms, [out.image]


def audio2lip_losses(ctx: StepContext, batch: dict, st: StageConfig, with_image: bool = True):
    model = ctx.model
    src, drv, mel = batch["source"], batch["driving"], batch["mel"]
    b, t = drv.shape[:2]
    frames = drv.flatten(0, 1)
    with torch.no_grad():
        enc_d = model.encode(frames)
        a_lip, a_pose, a_exp = model.bank_weights(model.motion_code(enc_d))
    pred = model.audio2lip(mel.flatten(0, 1)).reshape(b, t, -1)
    target = a_lip.reshape(b, t, -1)
    terms = {"lip": st.lip * F.mse_loss(pred, target)}
    if st.smooth and t > 1:
        terms["smooth"] = st.smooth * F.mse_loss(pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1])
    fakes = []
    if st.image and with_image:
        k = t // 2  # centre frame of each window
        enc_s = model.encode(src)
        z_s = model.motion_code(enc_s)
        src_motion = model.source_motion(z_s) if model.edi is not None else None
        a_exp_k = a_exp.reshape(b, t, -1)[:, k] if a_exp is not None else None
        image = model.decode(enc_s[0], enc_s[1], pred[:, k], a_pose.reshape(b, t, -1)[:, k], a_exp_k,
                             source_motion=src_motion, flow_offsets=_offsets(ctx, enc_s, z_s, src_motion))
        for name, v in image_terms(ctx, image, drv[:, k], st, "img_",
                                       landmarks=batch["landmarks"][:, k]).items():
            terms[name] = st.image * v
        fakes.append(image)
    return terms, fakes


STAGE_FUNCTIONS = {
    "base": base_losses,
    "lip_pose": lip_pose_losses,
    "exp": exp_losses,
    "fixtalk": fixtalk_losses,
    "audio2lip": audio2lip_losses,
}


def set_stage_mode(model: torch.nn.Module, stage: str) -> None:
    """Train/eval mode of a stage. exp and audio2lip keep the frozen parts in inference
    behaviour (EDI reads the motion-source memory); Audio2Lip itself trains in train mode so its
    BatchNorm layers normalise by batch statistics and learn running statistics for inference
    (in eval mode they would stay at their initial mean 0 / variance 1 forever)."""
    model.train()
    if stage in ("exp", "audio2lip"):
        model.eval()
    if stage == "audio2lip":
        model.audio2lip.train()


def trainable_prefixes(stage: str, model, override: str = "") -> tuple[str, ...] | None:
    """Parameter-name prefixes a stage trains (None = all generator parameters but Audio2Lip);
    ``override`` (StageConfig.trainable, comma-separated) replaces the stage's own choice."""
    if override.strip():
        return tuple(p.strip() for p in override.split(",") if p.strip())
    if stage == "exp":
        if not model.cfg.has_exp:
            raise ValueError(f"stage 'exp' needs a model with an expression bank (variant "
                             f"edtalk/fixtalk), got variant {model.cfg.variant!r}")
        return ("exp_fc.", "direction_exp.", "dec.fineadainresblock.")
    if stage == "fixtalk":
        if model.cfg.variant != "fixtalk":
            raise ValueError(f"stage 'fixtalk' needs variant 'fixtalk', got {model.cfg.variant!r}")
        return None
    if stage == "audio2lip":
        return ("audio2lip.",)
    return None
