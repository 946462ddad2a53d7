"""FixTalk: EDTalk's generator (encoder E, motion bases, decoder G with EEM) + EMI + EDI.

State-dict keys of the generator part are exactly EDTalk's (``enc.net_app.*``, ``dec.*``,
``direction_lipnonlip.weight``, ``direction_exp.weight``, ``fc.*``, ``lip_fc.*``, ``pose_fc.*``,
``exp_fc.*``), so ``EDTalk.pt['gen']`` / ``EDTalk_lip_pose.pt['gen']`` load strictly through
:meth:`FixTalk.load_generator_state_dict`. ``audio2lip``, ``emi`` and ``edi`` are separate
attributes (keys ``audio2lip.*``, ``emi.*``, ``edi.*``).

Data flow (paper notation):

* source I^s -> E -> f^s_6 (``code``) and maps f^s_{1..} (``feats``, coarse to fine);
* driver I^d -> E -> motion input: f^d_6 for EDTalk, EMI's z^d for FixTalk (``motion_code``);
* FDM: alpha_c = head_c(fc(z)), motion d = Q alpha, expression latent e = Q_e alpha_exp;
* FixTalk's EDI replaces the source map at ``edi.level`` (f^s_4) before the decoder (i.e. before
  EEM and the warp). **Choice (paper silent at inference):** EDI's motion inputs are the FDM motion
  latents z_d := Q alpha_d and z_s := Q alpha_s, so z_d - z_s = A (z^d - z^s) is EMI's relative
  motion seen through the (affine) FDM. This is defined for every driving mode, including audio
  and emotion labels where no driver image exists.
* image = G(f^s_6 + d, feats, e).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import ModelConfig
from .nets.audio2lip import Audio2Lip
from .nets.decoder import DecoderLevels, Synthesis, self_flow_offsets
from .nets.encoder import Encoder
from .nets.motion_bases import BasisCache, Direction, combine, head, shared_fc

EMOTION_LABELS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
NON_GENERATOR_PREFIXES = ("audio2lip.", "emi.", "edi.")


@dataclass
class GeneratorOutput:
    """Result of a self-reconstruction forward pass."""

    image: torch.Tensor
    source_code: torch.Tensor
    alpha_lip: torch.Tensor
    alpha_pose: torch.Tensor
    alpha_exp: torch.Tensor | None
    z_s: torch.Tensor
    z_d: torch.Tensor
    motion: torch.Tensor
    edi: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


def validate_config(cfg: ModelConfig) -> None:
    if cfg.variant not in ("edtalk", "edtalk_lip_pose", "fixtalk"):
        raise ValueError(f"unknown variant {cfg.variant!r} (edtalk, edtalk_lip_pose, fixtalk)")
    if cfg.size < 8 or cfg.size & (cfg.size - 1):
        raise ValueError(f"size must be a power of two >= 8, got {cfg.size}")
    n_dirs = cfg.lip_dim + cfg.pose_dim + (cfg.exp_dim if cfg.has_exp else 0)
    if min(cfg.lip_dim, cfg.pose_dim, cfg.exp_dim) < 1 or cfg.style_dim < n_dirs:
        raise ValueError(f"style_dim {cfg.style_dim} must be >= lip_dim + pose_dim (+ exp_dim) = "
                         f"{n_dirs} (the QR basis needs that many orthonormal columns), and every "
                         "bank size must be >= 1")
    need = [4] + cfg.levels
    missing = [r for r in need if r not in cfg.channels]
    if missing:
        raise ValueError(f"channel table {cfg.channels} lacks resolutions {missing}")
    if cfg.variant == "fixtalk":
        for name, sub in (("emi", cfg.emi), ("edi", cfg.edi)):
            if sub.enabled and sub.level not in cfg.levels:
                raise ValueError(f"{name}.level {sub.level} is not a decoder level {cfg.levels}")


class FixTalk(nn.Module):
    """The whole network for one :class:`ModelConfig` (variants edtalk / edtalk_lip_pose / fixtalk)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        validate_config(cfg)
        self.cfg = cfg
        d = cfg.style_dim
        bk = tuple(cfg.blur_kernel)
        self.enc = Encoder(cfg.size, d, cfg.channels, bk)
        self.dec = Synthesis(cfg.size, d, cfg.channels, with_eem=cfg.has_exp, blur_kernel=bk,
                             adain_hidden=cfg.adain_hidden)
        self.direction_lipnonlip = Direction(d, cfg.lip_dim + cfg.pose_dim)
        if cfg.has_exp:
            self.direction_exp = Direction(d, cfg.exp_dim)
        self.fc = shared_fc(d)
        self.lip_fc = head(d, cfg.lip_dim)
        self.pose_fc = head(d, cfg.pose_dim)
        if cfg.has_exp:
            self.exp_fc = head(d, cfg.exp_dim)
        self.audio2lip = Audio2Lip(cfg.audio2lip, cfg.lip_dim)
        self.emi = self.edi = None
        if cfg.variant == "fixtalk":
            from .nets.edi import EDI
            from .nets.emi import EMI

            if cfg.emi.enabled:
                self.emi = EMI(cfg.emi, dict(cfg.channels), list(cfg.levels), d)
            if cfg.edi.enabled:
                self.edi = EDI(cfg.edi, cfg.channels[cfg.edi.level], d)
        self.emotion_weights: dict[str, torch.Tensor] = {}
        self._basis = BasisCache()

    # ---------------------------------------------------------------- state dicts
    def generator_keys(self) -> list[str]:
        """Keys of the EDTalk generator part (what EDTalk.pt['gen'] holds)."""
        return [k for k in self.state_dict() if not k.startswith(NON_GENERATOR_PREFIXES)]

    def generator_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith(NON_GENERATOR_PREFIXES)}

    def load_generator_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Strictly load an EDTalk ``gen`` dict into the generator part (EMI/EDI/Audio2Lip kept)."""
        from .checkpoints import check_state_dict

        check_state_dict(sd, self.generator_state_dict(), what="EDTalk generator ('gen')")
        self.load_state_dict(sd, strict=False)
        self._basis.clear()

    # ---------------------------------------------------------------- building blocks
    @property
    def has_exp(self) -> bool:
        return self.cfg.has_exp

    def check_image(self, img: torch.Tensor) -> None:
        """Raise ValueError unless ``img`` is a finite float batch (B, 3, S, S) (values in [-1, 1])."""
        s = self.cfg.size
        want = f"expected images (B, 3, {s}, {s}) float in [-1, 1]"
        if not torch.is_tensor(img):
            raise ValueError(f"{want}, got {type(img).__name__}")
        if img.ndim != 4 or img.shape[0] == 0:
            raise ValueError(f"{want}, got shape {tuple(img.shape)}")
        if img.shape[1] != 3:
            raise ValueError(f"{want}, got {img.shape[1]} channels (shape {tuple(img.shape)}); "
                             "convert grey/RGBA images to RGB")
        if tuple(img.shape[2:]) != (s, s):
            raise ValueError(f"{want}, got {tuple(img.shape[2:])} pixels (shape "
                             f"{tuple(img.shape)}); crop/resize to the model size {s}")
        if not img.is_floating_point():
            raise ValueError(f"{want}, got dtype {img.dtype} (map uint8 x to x / 127.5 - 1)")
        if not bool(torch.isfinite(img).all()):
            raise ValueError(f"{want}, got NaN or Inf values")

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """E(I) -> (f_6 code (B, D), feats coarse -> fine)."""
        self.check_image(img)
        return self.enc(img)

    def motion_code(self, x) -> torch.Tensor:
        """The motion input of the banks: EMI's z (FixTalk) or the encoder code (EDTalk).
        ``x``: an image batch or an ``encode`` output ``(code, feats)``."""
        code, feats = self.encode(x) if torch.is_tensor(x) else x
        if self.emi is None:
            return code
        return self.emi(list(feats), code)

    def bank_weights(self, z: torch.Tensor):
        """(alpha_lip, alpha_pose, alpha_exp | None) = heads(fc(z)), all linear."""
        shared = self.fc(z)
        a_exp = self.exp_fc(shared) if self.has_exp else None
        return self.lip_fc(shared), self.pose_fc(shared), a_exp

    def basis(self) -> torch.Tensor:
        """Q (D, 26|36) orthonormal; cached outside training while the bank weights are unchanged."""
        w_exp = self.direction_exp.weight if self.has_exp else None
        return self._basis.get(self.direction_lipnonlip.weight, w_exp, use_cache=not self.training)

    def motion_latents(self, alpha_lip, alpha_pose, alpha_exp=None):
        """(d = Q alpha (B, D), e = Q_e alpha_exp (B, D) | None). Without alpha_exp only the
        lip/pose columns are used and e is None (EEM then leaves the source maps unchanged)."""
        q = self.basis()
        n_lp = self.cfg.lip_dim + self.cfg.pose_dim
        if alpha_exp is None or not self.has_exp:
            return combine(torch.cat([alpha_lip, alpha_pose], -1), q[:, :n_lp]), None
        alpha = torch.cat([alpha_lip, alpha_pose, alpha_exp], -1)
        return combine(alpha, q), combine(alpha_exp, q[:, n_lp:])

    def partial_latents(self, alpha_lip, alpha_pose, alpha_exp=None) -> dict[str, torch.Tensor]:
        """Per-component latents Q_lip alpha_lip, Q_pose alpha_pose (, Q_exp alpha_exp)."""
        q = self.basis()
        nl, n_lp = self.cfg.lip_dim, self.cfg.lip_dim + self.cfg.pose_dim
        out = {"lip": combine(alpha_lip, q[:, :nl]), "pose": combine(alpha_pose, q[:, nl:n_lp])}
        if alpha_exp is not None and self.has_exp:
            out["exp"] = combine(alpha_exp, q[:, n_lp:])
        return out

    def source_motion(self, z_s: torch.Tensor) -> torch.Tensor:
        """Q alpha_s of the source's own bank weights (EDI's z_s)."""
        return self.motion_latents(*self.bank_weights(z_s))[0]

    @property
    def edi_index(self) -> int | None:
        return None if self.edi is None else self.cfg.levels.index(self.cfg.edi.level)

    def decode(self, source_code, source_feats, alpha_lip, alpha_pose, alpha_exp=None, *,
               source_motion=None, driver_feats=None, levels: DecoderLevels | None = None,
               return_aux: bool = False, flow_offsets=None, still: bool = False):
        """G(f^s_6 + Q alpha, feats, e) -> image (B, 3, S, S), raw (no tanh/clamp).

        FixTalk: EDI replaces the source map at ``edi.level``; it needs ``source_motion`` (see
        :meth:`source_motion`) and, in training, the driver's maps ``driver_feats`` (f^d).
        ``flow_offsets``: relative flow (:meth:`self_flow`), None for the plain decoder;
        ``still``: identity warps at every level (the self pass of :meth:`self_flow`)."""
        motion, e = self.motion_latents(alpha_lip, alpha_pose, alpha_exp)
        latent = source_code + motion
        feats = list(source_feats)
        edi_out = None
        if self.edi is not None:
            if source_motion is None:
                raise ValueError("a FixTalk decode needs source_motion = model.source_motion(z_s)")
            i = self.edi_index
            f_d = driver_feats[i] if driver_feats is not None else None
            edi_out = self.edi(feats[i], motion, source_motion, f_d)
            feats[i] = edi_out.feature
        image = self.dec(latent, feats, e, levels, flow_offsets=flow_offsets, still=still)
        if return_aux:
            return image, {"motion": motion, "target_latent": latent, "exp_latent": e,
                           "edi": edi_out}
        return image

    def self_flow(self, source_code, source_feats, alpha_lip, alpha_pose, alpha_exp=None, *,
                  source_motion=None, grad: bool = False) -> list[torch.Tensor]:
        """Per-level flow displacements of the source decoded with its own bank weights alpha_s
        (:func:`fixtalk.nets.decoder.self_flow_offsets`), the ``flow_offsets`` of relative flow.
        ``grad``: keep the graph (training with relative flow); the source is its own driver."""
        levels = DecoderLevels()
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            self.decode(source_code, source_feats, alpha_lip, alpha_pose, alpha_exp,
                        source_motion=source_motion, levels=levels, still=True,
                        driver_feats=list(source_feats) if self.training else None)
        return self_flow_offsets(levels, detach=not grad)

    # ---------------------------------------------------------------- training forward
    def forward(self, source: torch.Tensor, driver: torch.Tensor,
                levels: DecoderLevels | None = None, relative_flow: bool = False) -> GeneratorOutput:
        """Self-reconstruction: render ``source`` with all motion (lip, pose, exp) of ``driver``
        (``levels`` collects the decoder's per-level intermediates when given; ``relative_flow``
        subtracts the source's self-flow, with gradient, see :meth:`self_flow`)."""
        enc_s, enc_d = self.encode(source), self.encode(driver)
        z_s, z_d = self.motion_code(enc_s), self.motion_code(enc_d)
        a_lip, a_pose, a_exp = self.bank_weights(z_d)
        src_motion = self.source_motion(z_s) if self.edi is not None else None
        offsets = None
        if relative_flow:
            offsets = self.self_flow(enc_s[0], enc_s[1], *self.bank_weights(z_s),
                                     source_motion=src_motion, grad=True)
        image, aux = self.decode(enc_s[0], enc_s[1], a_lip, a_pose, a_exp,
                                 source_motion=src_motion,
                                 driver_feats=enc_d[1] if self.training else None,
                                 levels=levels, return_aux=True, flow_offsets=offsets)
        return GeneratorOutput(image=image, source_code=enc_s[0], alpha_lip=a_lip,
                               alpha_pose=a_pose, alpha_exp=a_exp, z_s=z_s, z_d=z_d,
                               motion=aux["motion"], edi=aux["edi"],
                               extras={"source_motion": src_motion, "exp_latent": aux["exp_latent"],
                                       "self_flow": offsets})

    def train(self, mode: bool = True):
        self._basis.clear()
        return super().train(mode)


def plausible_random_init_(model: FixTalk, seed: int = 0, flow_scale: float = 0.05,
                           const_sigma: float = 0.1) -> FixTalk:
    """Random weights that behave like a trained network, as the parity fixture makes them
    (shared/fixtures/README.md section 4): every float tensor whose elements are all equal after
    init (biases, modulation biases, noise weights, EDI's zero output projection, BatchNorm
    statistics) gets N(0, ``const_sigma``^2) noise (FIR ``kernel`` buffers excepted), and the
    ToFlow weights are scaled by ``flow_scale`` so the warps stay near identity. With the N(0, 1)
    init the flows saturate and grid_sample amplifies float32 round-off by ~1e4, which makes
    batched-vs-per-frame comparisons meaningless. For benchmarks and tests; returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point() or t.numel() == 0 or name.endswith("kernel"):
                continue
            if name.startswith("dec.to_flows.") and name.endswith("conv.weight"):
                t.mul_(flow_scale)
            elif bool((t == t.reshape(-1)[0]).all()):
                noise = torch.randn(t.shape, generator=g) * const_sigma
                t.add_(noise.to(t.device, t.dtype))
                if name.endswith("running_var"):
                    t.clamp_(min=0.5)
    model._basis.clear()
    return model

