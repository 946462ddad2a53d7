"""Image and adversarial losses of the trainer (EDTalk/LIA recipe, section 5.2 of the code study).

* ``l1``: mean absolute error.
* Perceptual: EDTalk's VGG-pyramid loss (VGG19 relu1_1..relu5_1, ImageNet-normalised inputs, scales
  1, 1/2, 1/4, 1/8, per-layer L1 x 10) when the user supplies a VGG19 weights file
  (torchvision ``vgg19`` state-dict layout, keys ``features.N.weight``); loaded with
  ``torch.load(weights_only=True)``, never downloaded.
* Without that file, the documented substitute ``StructureLoss``: the same four-scale pyramid of
  L1 on the image plus L1 on its horizontal and vertical gradients (edges / texture) and a
  local-statistics (SSIM-style mean/variance) term. It needs no weights, is deterministic and is
  weaker than VGG on texture; the model card says so.
* Non-saturating GAN: G loss softplus(-D(fake)), D loss softplus(-D(real)) + softplus(D(fake)).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fixtalk.train.collective import batch_denominator

_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
_VGG_SLICES = [(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)]  # relu1_1 .. relu5_1 in features.*


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def mouth_l1(fake: torch.Tensor, real: torch.Tensor, landmarks: torch.Tensor, pad: float = 0.35) -> torch.Tensor:
    """L1 inside each driver's mouth box (dlib points 48-67, widened by ``pad`` x its size).

    *Choice* (not in EDTalk/FixTalk): the mouth covers ~1% of a 128 px crop, so plain L1 lets a small
    model ignore it for thousands of steps; this term makes lip motion visible to the loss early.
    """
    b, _, h, w = fake.shape
    pts = landmarks[:, 48:68]
    lo, hi = pts.amin(1), pts.amax(1)
    size = (hi - lo).clamp(min=4.0)
    lo, hi = lo - pad * size, hi + pad * size
    ys = torch.arange(h, device=fake.device, dtype=fake.dtype)[None, :, None]
    xs = torch.arange(w, device=fake.device, dtype=fake.dtype)[None, None, :]
    mask = ((xs >= lo[:, 0, None, None]) & (xs <= hi[:, 0, None, None])
            & (ys >= lo[:, 1, None, None]) & (ys <= hi[:, 1, None, None])).to(fake.dtype)[:, None]
    return ((fake - real).abs() * mask).sum() / batch_denominator(mask.sum() * fake.shape[1]).clamp(min=1.0)


#: dlib-68 points whose placement carries the head's turn: the jaw line (0-16) and the nose (27-35).
CONTOUR_POINTS = tuple(range(0, 17)) + tuple(range(27, 36))


def contour_l1(fake: torch.Tensor, real: torch.Tensor, landmarks: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    """L1 weighted by Gaussians (``sigma`` px) around each driver's jaw-line and nose points.

    *Choice* (not in EDTalk/FixTalk): a head turn moves the nose against the jaw line by a few
    pixels, which plain L1 over the whole crop hardly sees (docs/model_card.md, "Yaw, measured").
    """
    b, _, h, w = fake.shape
    pts = landmarks[:, list(CONTOUR_POINTS)].to(fake.dtype)  # (B, P, 2)
    ys = torch.arange(h, device=fake.device, dtype=fake.dtype)
    xs = torch.arange(w, device=fake.device, dtype=fake.dtype)
    gx = torch.exp(-((xs[None, None, :] - pts[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, P, W)
    gy = torch.exp(-((ys[None, None, :] - pts[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, P, H)
    weight = torch.einsum("bph,bpw->bhw", gy, gx).clamp(max=1.0)[:, None]
    return ((fake - real).abs() * weight).sum() / batch_denominator(weight.sum() * fake.shape[1]).clamp(min=1.0)


def pyramid(x: torch.Tensor, scales: int = 4) -> list[torch.Tensor]:
    """x at scales 1, 1/2, ... with anti-aliased (3x3 binomial blur + stride 2) downsampling."""
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    k2 = (k[:, None] * k[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    out = [x]
    for _ in range(scales - 1):
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, stride=2, groups=x.shape[1])
        out.append(x)
    return out


class StructureLoss(nn.Module):
    """No-download perceptual substitute: per scale L1(image) + L1(gradients) + local mean/std."""

    def __init__(self, scales: int = 4, grad_weight: float = 2.0, stat_weight: float = 1.0):
        super().__init__()
        self.scales, self.grad_weight, self.stat_weight = scales, grad_weight, stat_weight

    @staticmethod
    def _grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]

    @staticmethod
    def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = F.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
        var = F.avg_pool2d(x * x, 5, 1, 2, count_include_pad=False) - mu * mu
        return mu, var.clamp_min(0).add(1e-6).sqrt()

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        total = fake.new_zeros(())
        for f, r in zip(pyramid(fake, self.scales), pyramid(real, self.scales)):
            fx, fy = self._grads(f)
            rx, ry = self._grads(r)
            _, fs = self._stats(f)
            _, rs = self._stats(r)
            total = total + l1(f, r) + self.grad_weight * (l1(fx, rx) + l1(fy, ry)) + self.stat_weight * l1(fs, rs)
        return total / self.scales


class VGG19Features(nn.Module):
    """VGG19 ``features`` up to relu5_1 (torchvision key layout) returning the 5 relu outputs."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers[:30])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for a, b in _VGG_SLICES:
            x = self.features[a:b](x)
            out.append(x)
        return out


class VGGPyramidLoss(nn.Module):
    """EDTalk's perceptual loss: sum over 4 scales and 5 VGG19 layers of 10 * L1."""

    def __init__(self, weights_path: str | Path, scales: int = 4, layer_weight: float = 10.0):
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"VGG19 weights file {path} not found (expected a torchvision "
                                    "vgg19 state dict with keys features.N.weight/bias)")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k: v for k, v in sd.items() if k.startswith("features.") and int(k.split(".")[1]) < 30}
        self.vgg = VGG19Features()
        missing, _ = self.vgg.load_state_dict(sd, strict=False)
        missing = [k for k in missing if k.startswith("features.")]
        if missing:
            raise ValueError(f"{path}: not a VGG19 state dict, missing {missing[:4]}")
        self.vgg.requires_grad_(False).eval()
        self.scales, self.layer_weight = scales, layer_weight

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        total = fake.new_zeros(())
        for f, r in zip(pyramid(fake, self.scales), pyramid(real, self.scales)):
            for a, b in zip(self.vgg(f), self.vgg(r)):
                total = total + self.layer_weight * l1(a, b.detach())
        return total


def perceptual_loss(weights_path: str | None) -> nn.Module:
    """VGG pyramid when a weights file is given, else the documented ``StructureLoss``."""
    return VGGPyramidLoss(weights_path) if weights_path else StructureLoss()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(disc, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018, as in StyleGAN2): mean over the batch of ||d D(x) / d x||^2 on
    real images; keeps the discriminator smooth on the data. (The runaway seen on the synthetic set
    was the discriminator's missing equalised learning rate, which R1 alone did not prevent; see
    fixtalk.train.discriminator.)"""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(real).sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def latent_consistency(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """EDTalk's cross-reconstruction latent loss: mean_b exp(-cos(a_b, b_b))."""
    return torch.exp(-F.cosine_similarity(a, b, dim=-1, eps=1e-8)).mean()
