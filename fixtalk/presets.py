"""Named model presets and building a config from a parity fixture.

* ``edtalk-256``: EDTalk.pt (lip 20 + pose 6 + exp 10 banks, EEM), 256x256, D = 512;
* ``edtalk-lip-pose-256``: EDTalk_lip_pose.pt (lip + pose banks, no EEM);
* ``fixtalk-512``: the paper scale, 512x512 with EMI and EDI at the 32x32 level (f_4);
* ``tiny``: FixTalk at 128x128, D = 128, narrow channels; trains on a 2-core CPU (used by the
  shipped default model and the tests).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from .config import (AudioConfig, Audio2LipConfig, EDIConfig, EMIConfig, ModelConfig)

EDTALK_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}

PRESETS: dict[str, ModelConfig] = {
    "edtalk-256": ModelConfig(name="edtalk-256", variant="edtalk", size=256, style_dim=512,
                              channels=dict(EDTALK_CHANNELS)),
    "edtalk-lip-pose-256": ModelConfig(name="edtalk-lip-pose-256", variant="edtalk_lip_pose",
                                       size=256, style_dim=512, channels=dict(EDTALK_CHANNELS)),
    "fixtalk-512": ModelConfig(
        name="fixtalk-512", variant="fixtalk", size=512, style_dim=512,
        channels={**EDTALK_CHANNELS, 512: 32},
        emi=EMIConfig(enabled=True, level=32, depth=2, heads=8),
        edi=EDIConfig(enabled=True, level=32, slots=128, heads=8)),
    "tiny": ModelConfig(
        name="tiny", variant="fixtalk", size=128, style_dim=128,
        channels={4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16},
        audio2lip=Audio2LipConfig(widths=(16, 32, 64, 96, 128), embed_dim=128),
        emi=EMIConfig(enabled=True, level=32, depth=2, heads=4),
        edi=EDIConfig(enabled=True, level=32, slots=64, heads=4)),
}


def get_preset(name: str) -> ModelConfig:
    """A fresh (deep) copy of a named preset."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _audio_from_fixture(a: Mapping[str, Any]) -> AudioConfig:
    mels_per_s = a.get("mel_frames_per_second", 80)
    hop = a.get("hop_size", 200)
    sr = a.get("sample_rate", 16000)
    if sr / hop != mels_per_s:
        raise ValueError(f"fixture audio: sample_rate/hop {sr}/{hop} != {mels_per_s} mel frames/s")
    if a.get("window_start_offset_frames", -2) != -2 or a.get("pad_mode", "reflect") != "reflect":
        raise ValueError("fixture audio uses a window offset / STFT padding this build does not "
                         "implement (expected offset -2 frames and reflect padding)")
    return AudioConfig(sample_rate=sr, fps=a.get("fps", 25), n_fft=a.get("n_fft", 800),
                       hop_length=hop, win_length=a.get("win_size", 800),
                       n_mels=a.get("num_mels", 80), fmin=float(a.get("fmin", 55)),
                       fmax=float(a.get("fmax", 7600)), preemphasis=a.get("preemphasis", 0.97),
                       min_level_db=float(a.get("min_level_db", -100)),
                       ref_level_db=float(a.get("ref_level_db", 20)),
                       max_abs_value=float(a.get("max_abs_value", 4.0)),
                       window_frames=a.get("mel_step_size", 16))


def from_fixture_config(cfg: Mapping[str, Any], variant: str = "edtalk") -> ModelConfig:
    """ModelConfig from a parity fixture's ``config`` dict (shared/fixtures/README.md, section 2)."""
    channels = {int(k): int(v) for k, v in cfg["channels"].items()}  # the table is final
    a2l = cfg.get("audio2lip", {})
    sm = cfg.get("smoothing", {})
    audio = _audio_from_fixture(cfg.get("audio", {}))
    audio.smoothing_k = int(sm.get("k_size", 3))
    audio.smoothing_sigma = float(sm.get("sigma", 1.0))
    return ModelConfig(
        name="fixture", variant=variant, size=int(cfg["size"]), style_dim=int(cfg["style_dim"]),
        lip_dim=int(cfg["lip_dim"]), pose_dim=int(cfg["pose_dim"]), exp_dim=int(cfg["exp_dim"]),
        channels=channels, channel_multiplier=1,
        blur_kernel=tuple(cfg.get("blur_kernel", (1, 3, 3, 1))),
        adain_hidden=int(cfg.get("adain_hidden", 128)), audio=audio,
        audio2lip=Audio2LipConfig(widths=tuple(a2l.get("conv_widths", (32, 64, 128, 256, 512))),
                                  embed_dim=int(a2l.get("embedding_dim", 512))))
