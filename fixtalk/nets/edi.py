"""EDI, the Enhanced Detail Indicator of FixTalk (paper section "EDI", Fig. 2c-e).

In self-driven training the driver's 4th-level map f^d_4 carries the person's real appearance in the
target pose ("useful leakage"). EDI learns to *recall* such detail at inference from the source and
the motion only:

* compressor Pi: f_4 (C, r, r) -> compact token f_pi; decompressor Lambda: token -> (C, r, r);
* driven-identity memory M_d (S slots): addressed by f^d_pi, alpha_d = softmax(kappa cos(f^d_pi, M_d)),
  read f^d_pi hat = alpha_d M_d, trained by L_d-mem (:func:`fixtalk.losses.d_mem_loss`);
* motion-source memory M_{m-s} (S keys): addressed by [z^d - z^s, f^s_pi]; its address alpha_{m-s}
  reads from **M_d**: f^s_pi hat = alpha_{m-s} M_d. L_align = KL(alpha_{m-s} || alpha_d)
  (:func:`fixtalk.losses.align_loss`) teaches it to point where the true driver token points;
* fusion: multi-head cross-attention of f^s_4 with Lambda(read token), residual onto f^s_4. The result
  f~^s_pi replaces f^s_4 among the source maps given to the decoder G.

Train vs inference. The driver branch (Pi(f^d_4), alpha_d, alpha_d M_d) runs whenever ``f_d`` is
given, so its addresses/tokens are available for the losses (also in validation). It influences
``feature`` only in training mode (see ``train_read``); in eval mode ``feature`` depends on the
source and the motion only, and ``f_d`` may be omitted.

*Choices* where the paper is silent (fields of :class:`fixtalk.config.EDIConfig`):

* Pi = AdaptiveAvgPool2d(``pool_size``) + softmax-weighted sum over the pooled positions (weights
  start uniform, i.e. global average pooling) + Linear(C -> ``token_dim``).
* Lambda = Linear(token -> C x ``base_size``^2), then per doubling [nearest x2, conv3x3, LeakyReLU
  0.2] up to r (the last step clamps to r, so any r works), then a conv3x3.
* Addressing: softmax(``temperature`` * cosine) with a fixed temperature (kappa = 10 default);
  slots initialised N(0, 1). The memories are learnable matrices trained by back-propagation (no
  explicit write rule).
* ``train_read="driver"`` (default): in training with ``f_d`` the fused token is the driver read
  alpha_d M_d (teacher forcing, so the decoder learns to use what M_d "records"), at inference it
  is alpha_{m-s} M_d. ``"ms"`` always fuses alpha_{m-s} M_d.
* MHCA: queries = LayerNorm(f^s_4) tokens + 2-D sine positions; ``kv_mode="recalled"`` uses
  K = V = LayerNorm(Lambda(token)) (+ positions on K); ``"figure"`` follows the drawing order of
  Fig. 2e literally: K = f^s_4, V = Lambda(token). The output projection is zero-initialised, so at
  initialisation ``feature == f_s`` exactly and a model fine-tuned from EDTalk starts at the
  baseline; the first steps of an image loss train that projection, after which gradients reach the
  attention projections as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EDIConfig
from .emi import CrossAttention, sine_position_encoding_2d

_KV_MODES = ("recalled", "figure")
_TRAIN_READS = ("driver", "ms")


@dataclass
class EDIOutput:
    """Result of :meth:`EDI.forward`. S = slot count, T = token width."""

    feature: torch.Tensor  # f~^s_pi (B, C, r, r): replaces the source map at ``level``
    addr_ms: torch.Tensor  # alpha_{m-s} (B, S)
    addr_d: torch.Tensor | None  # alpha_d (B, S), only when f_d is given
    token_d: torch.Tensor | None  # f^d_pi (B, T), only when f_d is given
    token_d_read: torch.Tensor | None  # alpha_d M_d (B, T), only when f_d is given
    token_s: torch.Tensor  # f^s_pi (B, T)
    token_ms_read: torch.Tensor  # f^s_pi hat = alpha_{m-s} M_d (B, T)


def memory_address(query: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(temperature * cos(query, keys)): query (B, D), keys (S, D) -> (B, S)."""
    sim = F.normalize(query, dim=-1, eps=1e-6) @ F.normalize(keys, dim=-1, eps=1e-6).t()
    return torch.softmax(temperature * sim, dim=-1)


class Compressor(nn.Module):
    """Pi: (B, C, r, r) -> (B, token_dim) by average pooling and a learned weighted sum."""

    def __init__(self, channels: int, size: int, pool_size: int, token_dim: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(min(pool_size, size))
        n = min(pool_size, size) ** 2
        self.position_logits = nn.Parameter(torch.zeros(n))
        self.proj = nn.Linear(channels, token_dim)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(fmap).flatten(2)  # (B, C, p*p)
        w = torch.softmax(self.position_logits, dim=0).to(dtype=pooled.dtype)
        return self.proj(pooled @ w)


class Decompressor(nn.Module):
    """Lambda: (B, token_dim) -> (B, C, r, r)."""

    def __init__(self, token_dim: int, channels: int, size: int, base_size: int):
        super().__init__()
        self.channels = channels
        self.size = size
        self.base = max(1, min(base_size, size))
        self.fc = nn.Linear(token_dim, channels * self.base * self.base)
        self.sizes: list[int] = []
        s = self.base
        while s < size:
            s = min(2 * s, size)
            self.sizes.append(s)
        self.ups = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in self.sizes)
        self.out = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        x = self.fc(token).view(token.shape[0], self.channels, self.base, self.base)
        for s, conv in zip(self.sizes, self.ups):
            x = F.leaky_relu(conv(F.interpolate(x, size=(s, s), mode="nearest")), 0.2)
        return self.out(x)


class EDI(nn.Module):
    """Enhanced Detail Indicator at one pyramid level (resolution ``cfg.level``).

    Args:
        cfg: :class:`EDIConfig` (``level`` = r, ``slots`` = S, ``temperature`` = kappa, ``heads``).
        channels: C, channels of the level map.
        style_dim: width of the motion codes z^s, z^d.
    """

    def __init__(self, cfg: EDIConfig, channels: int, style_dim: int):
        super().__init__()
        if cfg.kv_mode not in _KV_MODES:
            raise ValueError(f"EDI kv_mode must be one of {_KV_MODES}, got {cfg.kv_mode!r}")
        if cfg.train_read not in _TRAIN_READS:
            raise ValueError(f"EDI train_read must be one of {_TRAIN_READS}, got {cfg.train_read!r}")
        if cfg.slots < 1 or cfg.level < 1 or channels < 1:
            raise ValueError(f"EDI needs slots, level and channels >= 1, got {cfg.slots}, "
                             f"{cfg.level}, {channels}")
        self.cfg = cfg
        self.channels = channels
        self.size = cfg.level
        self.style_dim = style_dim
        token_dim = cfg.token_dim or style_dim
        self.token_dim = token_dim
        self.compressor = Compressor(channels, cfg.level, cfg.pool_size, token_dim)
        self.decompressor = Decompressor(token_dim, channels, cfg.level, cfg.base_size)
        self.mem_d = nn.Parameter(torch.randn(cfg.slots, token_dim))
        self.mem_ms = nn.Parameter(torch.randn(cfg.slots, style_dim + token_dim))
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.fuse = CrossAttention(channels, channels, cfg.attn_dim or channels, cfg.heads,
                                   channels, zero_init_out=True)
        self.register_buffer("pos", sine_position_encoding_2d(cfg.level, channels)[None],
                             persistent=False)

    def _check(self, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
        if tuple(t.shape) != shape:
            raise ValueError(f"EDI {name} must have shape {shape}, got {tuple(t.shape)}")

    def _fuse(self, f_s: torch.Tensor, recalled: torch.Tensor) -> torch.Tensor:
        b, c, r, _ = f_s.shape
        pos = self.pos.to(dtype=f_s.dtype)
        src = self.norm_q(f_s.flatten(2).transpose(1, 2))
        rec = self.norm_kv(recalled.flatten(2).transpose(1, 2))
        key = (src if self.cfg.kv_mode == "figure" else rec) + pos
        delta = self.fuse(src + pos, key, rec)  # (B, r*r, C)
        return f_s + delta.transpose(1, 2).reshape(b, c, r, r)

    def forward(self, f_s: torch.Tensor, z_d: torch.Tensor, z_s: torch.Tensor,
                f_d: torch.Tensor | None = None) -> EDIOutput:
        """f_s/f_d: source/driver maps (B, C, r, r); z_d/z_s: EMI codes (B, style_dim)."""
        b = f_s.shape[0]
        self._check("f_s", f_s, (b, self.channels, self.size, self.size))
        self._check("z_d", z_d, (b, self.style_dim))
        self._check("z_s", z_s, (b, self.style_dim))
        kappa = self.cfg.temperature
        token_s = self.compressor(f_s)
        addr_ms = memory_address(torch.cat([z_d - z_s, token_s], dim=1), self.mem_ms, kappa)
        token_ms_read = addr_ms @ self.mem_d.to(dtype=addr_ms.dtype)
        addr_d = token_d = token_d_read = None
        if f_d is not None:
            self._check("f_d", f_d, tuple(f_s.shape))
            token_d = self.compressor(f_d)
            addr_d = memory_address(token_d, self.mem_d, kappa)
            token_d_read = addr_d @ self.mem_d.to(dtype=addr_d.dtype)
        use_driver = self.training and token_d_read is not None and self.cfg.train_read == "driver"
        token = token_d_read if use_driver else token_ms_read
        feature = self._fuse(f_s, self.decompressor(token))
        return EDIOutput(feature=feature, addr_ms=addr_ms, addr_d=addr_d, token_d=token_d,
                         token_d_read=token_d_read, token_s=token_s, token_ms_read=token_ms_read)
