"""SyncNet lip-sync evaluation (LSE-C, LSE-D, AV offset), for users who supply SyncNet weights.

The network is the two-stream SyncNet of Chung & Zisserman ("Out of time", ACCV 2016 workshops)
in the layout published with ``joonson/syncnet_python`` (``syncnet_v2.model``), written here from
its description so that file's state dict loads by name:

* audio stream ``netcnnaud`` + ``netfcaud``: a 1x13x20 MFCC patch (13 cepstra x 20 steps of
  10 ms = 0.2 s, i.e. 5 video frames) through six 3x3 conv/BN/ReLU layers with max-pooling and a
  final (5, 4) conv to 512 channels, then 512 -> 512 -> 1024 fully connected;
* visual stream ``netcnnlip`` + ``netfclip``: 5 consecutive 224x224 BGR face crops (pixel values
  0-255) through a 3-D conv (5x7x7) and 2-D-in-time convs to 512 channels, then 512 -> 512 -> 1024.

Evaluation: for each video window start ``i`` the visual feature ``v_i`` is compared with the audio
features ``a_{i+s}`` for shifts ``s`` in ``[-S, S]`` (``S = vshift = 15``); the Euclidean distances
are averaged over ``i`` to ``mdist(s)``. Then ``LSE-D = min_s mdist``, ``LSE-C = median_s mdist -
min_s mdist`` and ``AV offset = -argmin_s mdist``: a positive offset means the picture is late
(the same sign as :func:`fixtalk.measure.lipsync.best_lag`).

MFCCs follow the classic recipe of the ``python_speech_features`` package that syncnet_python
uses (pre-emphasis 0.97, 25 ms rectangular frames every 10 ms, 512-point power spectrum, 26 mel
filters, log, DCT-II (orthonormal), 13 cepstra, sinusoidal lifter 22, c0 replaced by the log
frame energy), on int16-scaled samples at 16 kHz.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.base import SystemicError

SAMPLE_RATE = 16000
#: 16 kHz samples per video frame at 25 fps.
SAMPLES_PER_FRAME = 640


def _block2d(cin: int, cout: int, kernel, padding=1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _block3d(cin: int, cout: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True)]


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                         nn.Linear(512, 1024))


class SyncNet(nn.Module):
    """Audio and lip embedders into a shared 1024-d space (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_block2d(1, 64, 3), nn.MaxPool2d(1, 1),
            *_block2d(64, 192, 3), nn.MaxPool2d(3, (1, 2)),
            *_block2d(192, 384, 3),
            *_block2d(384, 256, 3),
            *_block2d(256, 256, 3), nn.MaxPool2d(3, 2),
            *_block2d(256, 512, (5, 4), padding=0),
        )
        self.netfcaud = _head()
        self.netcnnlip = nn.Sequential(
            *_block3d(3, 96, (5, 7, 7), (1, 2, 2)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_block3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_block3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_block3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_block3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_block3d(256, 512, (1, 6, 6)),
        )
        self.netfclip = _head()

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 13, 20)`` MFCC patches -> ``(N, 1024)``."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, clips: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 5, 224, 224)`` BGR 0-255 face crops -> ``(N, 1024)``."""
        return self.netfclip(self.netcnnlip(clips).flatten(1))


def load_syncnet(path: str | Path, device: torch.device | str = "cpu") -> SyncNet:
    """SyncNet with weights from ``path`` (a state dict, ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise SystemicError(f"qc.syncnet_weights: {path} does not exist; see docs/qc.md for how to "
                            "obtain syncnet_v2.model, or leave the setting empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors come in many types
        raise SystemicError(f"qc.syncnet_weights: cannot read {path.name} as a state dict ({exc})"
                            ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module.").removeprefix("__S__."): v for k, v in state.items()}
    net = SyncNet()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemicError(f"qc.syncnet_weights: {path.name} is not a SyncNet state dict "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return net.to(device=torch.device(device), dtype=torch.float32).eval()


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mfcc(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, *, numcep: int = 13,
         nfilt: int = 26, nfft: int = 512, winlen: float = 0.025, winstep: float = 0.01,
         preemph: float = 0.97, lifter: int = 22) -> np.ndarray:
    """MFCC frames ``(T, numcep)`` at 100 Hz, the recipe in the module docstring."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    x = np.append(x[:1], x[1:] - preemph * x[:-1])
    flen, fstep = int(round(winlen * sample_rate)), int(round(winstep * sample_rate))
    nframes = 1 if len(x) <= flen else 1 + int(np.ceil((len(x) - flen) / fstep))
    padded = np.concatenate([x, np.zeros(max(0, (nframes - 1) * fstep + flen - len(x)))])
    idx = np.arange(flen)[None, :] + fstep * np.arange(nframes)[:, None]
    frames = padded[idx]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(np.float64).eps
    energy = np.where(power.sum(1) == 0, eps, power.sum(1))
    mel = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mel) / sample_rate).astype(int)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for k in range(lo, mid):
            bank[j, k] = (k - lo) / (mid - lo)
        for k in range(mid, hi):
            bank[j, k] = (hi - k) / (hi - mid)
    feat = power @ bank.T
    feat = np.log(np.where(feat == 0, eps, feat))
    n = np.arange(nfilt)
    dct = np.cos(np.pi * np.outer(np.arange(numcep), 2 * n + 1) / (2 * nfilt))
    dct *= np.sqrt(2.0 / nfilt)
    dct[0] /= np.sqrt(2.0)
    ceps = feat @ dct.T
    if lifter > 0:
        ceps *= 1 + (lifter / 2.0) * np.sin(np.pi * np.arange(numcep) / lifter)
    ceps[:, 0] = np.log(energy)
    return ceps


def face_crop_224(frame_rgb: np.ndarray, box: tuple[float, float, float, float],
                  box_scale: float = 1.25, margin: float = 0.4) -> np.ndarray:
    """SyncNet's input crop around a face box: half-size ``bs`` (of the box enlarged by
    ``box_scale``, roughly an S3FD box from a dlib one), from ``bs`` above the centre to
    ``bs (1 + 2 margin)`` below it and ``bs (1 + margin)`` either side; grey padding (110); 224x224
    BGR uint8."""
    import cv2

    l, t, r, b = (float(v) for v in box)
    bs = max(r - l, b - t) * box_scale / 2.0
    cx, cy = (l + r) / 2.0, (t + b) / 2.0
    pad = int(np.ceil(bs * (1 + 2 * margin))) + 1
    img = cv2.copyMakeBorder(np.ascontiguousarray(frame_rgb[:, :, ::-1]), pad, pad, pad, pad,
                             cv2.BORDER_CONSTANT, value=(110, 110, 110))
    cx, cy = cx + pad, cy + pad
    y0, y1 = int(cy - bs), int(cy + bs * (1 + 2 * margin))
    x0, x1 = int(cx - bs * (1 + margin)), int(cx + bs * (1 + margin))
    return cv2.resize(img[y0:y1, x0:x1], (224, 224), interpolation=cv2.INTER_LINEAR)


@torch.no_grad()
def evaluate_sync(net: SyncNet, crops_bgr: np.ndarray, samples_16k: np.ndarray, *,
                  vshift: int = 15, batch: int = 16) -> dict[str, object]:
    """LSE-C, LSE-D and AV offset of 25 fps face crops ``(T, 224, 224, 3)`` BGR uint8 against
    16 kHz mono float audio in [-1, 1]. Returns also ``mdist`` (per shift ``-vshift..vshift``)."""
    device = next(net.parameters()).device
    cc = mfcc(np.asarray(samples_16k, dtype=np.float64) * 32768.0).T  # (13, T100)
    last = min(len(crops_bgr), len(samples_16k) // SAMPLES_PER_FRAME) - 5
    if last < 1:
        raise ValueError(f"SyncNet needs at least 6 frames of video and audio, got "
                         f"{len(crops_bgr)} frames and {len(samples_16k) / SAMPLE_RATE:.2f} s")
    vid = torch.from_numpy(np.ascontiguousarray(crops_bgr)).to(device=device, dtype=torch.float32)
    vid = vid.permute(3, 0, 1, 2)  # (3, T, 224, 224)
    aud = torch.from_numpy(cc).to(device=device, dtype=torch.float32)
    v_feats, a_feats = [], []
    for start in range(0, last, batch):
        idx = range(start, min(last, start + batch))
        v_feats.append(net.forward_lip(torch.stack([vid[:, i:i + 5] for i in idx])))
        patches = [aud[:, i * 4:i * 4 + 20] for i in idx]
        patches = [nn.functional.pad(p, (0, 20 - p.shape[1])) for p in patches]
        a_feats.append(net.forward_aud(torch.stack(patches)[:, None]))
    v, a = torch.cat(v_feats), torch.cat(a_feats)
    a_pad = nn.functional.pad(a, (0, 0, vshift, vshift))
    win = 2 * vshift + 1
    dists = torch.stack([nn.functional.pairwise_distance(v[i:i + 1].expand(win, -1),
                                                         a_pad[i:i + win]) for i in range(len(v))])
    mdist = dists.mean(0).cpu().numpy().astype(np.float64)
    k = int(np.argmin(mdist))
    return {"lse_d": float(mdist[k]), "lse_c": float(np.median(mdist) - mdist[k]),
            "av_offset": int(vshift - k), "mdist": mdist.tolist()}
