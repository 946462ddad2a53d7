"""Audio2Lip: Wav2Lip's audio encoder + Linear(embed -> lip_dim), and the demos' smoothing.

Input: mel windows (T, 1, 80, 16). Each block is Conv2d + BatchNorm2d (+ residual) + ReLU; widths
w0..w4 (32/64/128/256/512 in EDTalk) and strides (1, 1, 1, (3,1), 1, 1, 3, 1, 1, (3,2), 1, 1x1 pad
0...) reduce 80x16 to 1x1; ``mapping`` gives alpha_lip in the same space as ``lip_fc`` outputs.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..config import Audio2LipConfig


class ConvBlock(nn.Module):
    """``relu(bn(conv(x)) [+ x])`` with keys ``conv_block.0`` (conv) and ``conv_block.1`` (BN)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride, padding: int,
                 residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding),
                                        nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return F.relu(out)


def audio_encoder(widths: tuple[int, ...], embed_dim: int) -> nn.Sequential:
    w0, w1, w2, w3, w4 = widths
    return nn.Sequential(
        ConvBlock(1, w0, 3, 1, 1),
        ConvBlock(w0, w0, 3, 1, 1, residual=True),
        ConvBlock(w0, w0, 3, 1, 1, residual=True),
        ConvBlock(w0, w1, 3, (3, 1), 1),
        ConvBlock(w1, w1, 3, 1, 1, residual=True),
        ConvBlock(w1, w1, 3, 1, 1, residual=True),
        ConvBlock(w1, w2, 3, 3, 1),
        ConvBlock(w2, w2, 3, 1, 1, residual=True),
        ConvBlock(w2, w2, 3, 1, 1, residual=True),
        ConvBlock(w2, w3, 3, (3, 2), 1),
        ConvBlock(w3, w3, 3, 1, 1, residual=True),
        ConvBlock(w3, w4, 3, 1, 0),
        ConvBlock(w4, embed_dim, 1, 1, 0),
    )


class Audio2Lip(nn.Module):
    """Mel windows (N, 1, 80, 16) -> lip-bank weights alpha_lip (N, lip_dim)."""

    def __init__(self, cfg: Audio2LipConfig, lip_dim: int = 20):
        super().__init__()
        if len(cfg.widths) != 5:
            raise ValueError(f"Audio2Lip needs 5 conv widths, got {cfg.widths}")
        self.audio_encoder = audio_encoder(tuple(cfg.widths), cfg.embed_dim)
        self.mapping = nn.Linear(cfg.embed_dim, lip_dim)
        nn.init.zeros_(self.mapping.bias)

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 4 or mel.shape[1] != 1:
            raise ValueError(f"expected mel windows (N, 1, n_mels, frames), got {tuple(mel.shape)}")
        return self.audio_encoder(mel).flatten(1)

    def forward(self, mel: torch.Tensor, return_embedding: bool = False):
        emb = self.embed(mel)
        out = self.mapping(emb)
        return (out, emb) if return_embedding else out


def gaussian_kernel(k: int = 3, sigma: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """exp(-x^2 / (2 sigma^2)) on x = -(k//2)..k//2, normalised in float64, returned float32
    on ``device``."""
    x = torch.arange(k, dtype=torch.float64, device=device) - (k - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).to(torch.float32)


def smooth_time(x: torch.Tensor, k: int = 3, sigma: float = 1.0) -> torch.Tensor:
    """Per-channel temporal Gaussian with zero padding (edges attenuated), x: (T, C) -> (T, C)."""
    if x.ndim != 2:
        raise ValueError(f"expected (T, C) weights, got {tuple(x.shape)}")
    c = x.shape[1]
    w = gaussian_kernel(k, sigma, x.device).to(dtype=x.dtype).view(1, 1, k).repeat(c, 1, 1)
    y = F.conv1d(x.t().unsqueeze(0), w, padding=k // 2, groups=c)
    return y[0].t()



