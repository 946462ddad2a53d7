"""EMI, the Enhanced Motion Indicator of FixTalk (paper section "EMI", Fig. 2b).

EDTalk feeds the driver's final encoder code f^d_6 to the motion bases (FDM). FixTalk replaces it
with z^d = EMI(f^d_{1:5}): a learnable query cross-attends over the tokens of the 4th-level map
f^d_4 (extractor P, N x [cross-attention -> FFN] with residuals), and the result is fused with the
average-pooled other levels by a weighted sum. Applied to the source image the same module gives
z^s, and L_dis = max(0, cos(z^s, z^d) - xi) (:func:`fixtalk.losses.dis_loss`) pushes the two apart.

What the paper states: learnable query, N cross-attention+FFN blocks with residuals over f^d_4,
"average pooling + weighted sum" fusion with f^d_{1:3} and f^d_5. Everything below marked
*choice* is ours (the paper is silent) and is a field of :class:`fixtalk.config.EMIConfig`:

* *choice* pre-norm blocks (LayerNorm before attention and FFN), 2-D sine positional encoding
  added to the keys, GELU FFN of width ``ffn_mult * attn_dim``; ``num_queries`` queries whose
  outputs are averaged; tokens projected to ``attn_dim`` when it differs from the level's channels.
* *choice* every level map is global-average-pooled and projected by its own Linear to
  ``style_dim`` (the channel widths differ); ``pool_levels`` selects which levels (default: all
  but ``level``). The output of P is projected to ``style_dim`` too.
* *choice* the weights of the sum are ``softmax(beta)`` with one learnable logit per term.
* *choice* (``fuse_code``) the code f_6 is one more term of the sum, unprojected, with initial
  logit ``code_logit`` while every other logit starts at 0. With the default 6.0 and 5 other
  terms the code weighs 0.988 at initialisation, so z ~= f_6 and a FixTalk model fine-tuned
  from an EDTalk checkpoint starts close to the baseline motion input, while every EMI parameter
  still receives a (small, non-zero) gradient, which Adam normalises. The price: Adam moves
  ``beta`` by about one learning rate per step, so at fine-tuning learning rates the code term
  dominates for many steps; give ``EMI.beta`` its own optimizer group with a larger learning rate
  (or lower ``code_logit``) when L_dis should take effect quickly. ``fuse_code=False`` gives the
  literal paper fusion (all logits start at 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EMIConfig


def sine_position_encoding_2d(size: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine/cosine positional encoding, (size*size, dim), row-major like ``flatten(2)``.

    Half of the channels encode the row, half the column (each half: sin then cos of
    geometric frequencies). A ``dim`` that is not a multiple of 4 is served by computing the
    next multiple and dropping the last channels."""
    if dim < 1 or size < 1:
        raise ValueError(f"positional encoding needs size >= 1 and dim >= 1, got {size}, {dim}")
    full = dim + (-dim) % 4
    quarter = full // 4
    freq = temperature ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(size, dtype=torch.float64)[:, None] * freq[None, :]  # (size, quarter)
    enc_1d = torch.cat([pos.sin(), pos.cos()], dim=1)  # (size, dim/2)
    rows = enc_1d[:, None, :].expand(size, size, full // 2)
    cols = enc_1d[None, :, :].expand(size, size, full // 2)
    return torch.cat([rows, cols], dim=2).reshape(size * size, full)[:, :dim].float()


class CrossAttention(nn.Module):
    """Multi-head cross-attention ``out(softmax(q k^T / sqrt(d)) v)`` with separate q/k/v widths.

    ``zero_init_out`` zero-initialises the output projection so that a residual use of the block
    is the identity at initialisation."""

    def __init__(self, q_dim: int, kv_dim: int, attn_dim: int, heads: int, out_dim: int,
                 zero_init_out: bool = False):
        super().__init__()
        if heads < 1 or attn_dim % heads != 0:
            raise ValueError(f"attention width {attn_dim} must be divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(q_dim, attn_dim)
        self.k = nn.Linear(kv_dim, attn_dim)
        self.v = nn.Linear(kv_dim, attn_dim)
        self.out = nn.Linear(attn_dim, out_dim)
        if zero_init_out:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """query (B, Lq, q_dim), key/value (B, Lk, kv_dim) -> (B, Lq, out_dim)."""
        b, lq, _ = query.shape
        lk = key.shape[1]
        h = self.heads
        q = self.q(query).view(b, lq, h, -1).transpose(1, 2)
        k = self.k(key).view(b, lk, h, -1).transpose(1, 2)
        v = self.v(value).view(b, lk, h, -1).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, lq, -1))


class QueryBlock(nn.Module):
    """One block of the extractor P: pre-norm cross-attention then FFN, both residual."""

    def __init__(self, dim: int, heads: int, ffn_mult: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, dim, dim, heads, dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(),
                                 nn.Linear(ffn_mult * dim, dim))

    def forward(self, q: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(tokens)
        q = q + self.attn(self.norm_q(q), kv + pos, kv)
        return q + self.ffn(self.norm_ffn(q))


class MotionExtractor(nn.Module):
    """Extractor P: learnable queries q_l attending over the tokens of f^d_4 -> (B, attn_dim)."""

    def __init__(self, in_channels: int, size: int, attn_dim: int, depth: int, heads: int,
                 ffn_mult: int, num_queries: int):
        super().__init__()
        if depth < 1 or num_queries < 1:
            raise ValueError(f"EMI needs depth >= 1 and num_queries >= 1, got {depth}, {num_queries}")
        self.size = size
        self.in_proj = nn.Identity() if attn_dim == in_channels else nn.Linear(in_channels, attn_dim)
        self.queries = nn.Parameter(torch.randn(1, num_queries, attn_dim) * 0.02)
        self.blocks = nn.ModuleList(QueryBlock(attn_dim, heads, ffn_mult) for _ in range(depth))
        self.norm_out = nn.LayerNorm(attn_dim)
        self.register_buffer("pos", sine_position_encoding_2d(size, attn_dim)[None], persistent=False)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        tokens = self.in_proj(fmap.flatten(2).transpose(1, 2))  # (B, r*r, attn_dim)
        pos = self.pos.to(dtype=tokens.dtype)
        q = self.queries.expand(fmap.shape[0], -1, -1).to(dtype=tokens.dtype)
        for block in self.blocks:
            q = block(q, tokens, pos)
        return self.norm_out(q).mean(dim=1)


class EMI(nn.Module):
    """Enhanced Motion Indicator: ``forward(feats, code) -> z`` (B, style_dim).

    Args:
        cfg: :class:`EMIConfig` (``level`` = resolution of f_4, ``depth`` = N, ``heads``, ...).
        channels: resolution -> channels of the encoder pyramid.
        levels: resolutions of ``feats`` in order, coarse to fine (e.g. [8, 16, 32, 64, 128]).
        style_dim: width of the encoder code f_6 and of z.
    """

    def __init__(self, cfg: EMIConfig, channels: dict[int, int], levels: list[int], style_dim: int):
        super().__init__()
        levels = [int(r) for r in levels]
        if cfg.level not in levels:
            raise ValueError(f"EMI level {cfg.level} is not among the pyramid levels {levels}")
        missing = [r for r in levels if r not in channels]
        if missing:
            raise ValueError(f"channel table lacks EMI pyramid levels {missing}")
        pool_levels = list(cfg.pool_levels) or [r for r in levels if r != cfg.level]
        bad = [r for r in pool_levels if r not in levels or r == cfg.level]
        if bad:
            raise ValueError(f"EMI pool_levels {bad} must be pyramid levels {levels} other than "
                             f"level {cfg.level}")
        self.cfg = cfg
        self.levels = levels
        self.channels = {r: int(channels[r]) for r in levels}
        self.pool_levels = pool_levels
        self.style_dim = style_dim
        c4 = self.channels[cfg.level]
        attn_dim = cfg.attn_dim or c4
        self.extractor = MotionExtractor(c4, cfg.level, attn_dim, cfg.depth, cfg.heads,
                                         cfg.ffn_mult, cfg.num_queries)
        self.extractor_proj = nn.Linear(attn_dim, style_dim)
        self.pool_proj = nn.ModuleDict({str(r): nn.Linear(self.channels[r], style_dim)
                                        for r in pool_levels})
        n_terms = 1 + len(pool_levels) + int(cfg.fuse_code)
        beta = torch.zeros(n_terms)
        if cfg.fuse_code:
            beta[-1] = cfg.code_logit
        self.beta = nn.Parameter(beta)

    def fusion_weights(self) -> torch.Tensor:
        """softmax(beta): weights of [P output, pooled ``pool_levels`` ..., (code f_6)]."""
        return torch.softmax(self.beta, dim=0)

    def _check(self, feats: list[torch.Tensor], code: torch.Tensor) -> None:
        if len(feats) != len(self.levels):
            raise ValueError(f"EMI expects {len(self.levels)} feature maps (levels {self.levels}, "
                             f"coarse to fine), got {len(feats)}")
        b = code.shape[0]
        if code.dim() != 2 or code.shape[1] != self.style_dim:
            raise ValueError(f"EMI code must be (B, {self.style_dim}), got {tuple(code.shape)}")
        for r, f in zip(self.levels, feats):
            want = (b, self.channels[r], r, r)
            if tuple(f.shape) != want:
                raise ValueError(f"EMI feature at level {r} must be {want} (B, C, r, r), "
                                 f"got {tuple(f.shape)}")

    def forward(self, feats: list[torch.Tensor], code: torch.Tensor) -> torch.Tensor:
        """feats: encoder maps coarse to fine; code: f_6 (B, style_dim) -> z (B, style_dim)."""
        self._check(feats, code)
        by_level = dict(zip(self.levels, feats))
        terms = [self.extractor_proj(self.extractor(by_level[self.cfg.level]))]
        for r in self.pool_levels:
            terms.append(self.pool_proj[str(r)](by_level[r].mean(dim=(2, 3))))
        if self.cfg.fuse_code:
            terms.append(code)
        w = self.fusion_weights().to(dtype=code.dtype)
        return torch.einsum("t,tbd->bd", w, torch.stack(terms, dim=0))
