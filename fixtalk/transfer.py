"""Initialise a FixTalk model from an EDTalk generator (EMI and EDI stay freshly initialised).

The generator is copied level by level, matched by **resolution**, so a 256x256 EDTalk checkpoint
can seed the paper-scale 512x512 FixTalk: encoder ResBlocks are matched by their input resolution,
decoder levels (8, 16, ...) keep their indices, and whatever has no counterpart or a different
shape (e.g. the 512-level stem and the new finest decoder level) keeps its fresh initialisation.
With equal sizes every generator tensor is copied.
"""
from __future__ import annotations

import math
import os
from typing import Mapping

import torch

from .model import FixTalk
from .presets import get_preset

PathLike = str | os.PathLike


def _encoder_index_map(src_size: int, dst_size: int) -> dict[int, int]:
    """Encoder ``convs`` index in the source -> index in the destination (same resolution)."""
    ns, nd = int(math.log2(src_size)) - 2, int(math.log2(dst_size)) - 2  # ResBlock counts
    m: dict[int, int] = {}
    if src_size == dst_size:
        m[0] = 0
    for j in range(1, ns + 1):  # src ResBlock j has input resolution src_size / 2^(j-1)
        r = src_size >> (j - 1)
        if r <= dst_size:
            m[j] = int(math.log2(dst_size // r)) + 1
    m[ns + 1] = nd + 1  # the final 4x4 conv
    return m


def _map_key(key: str, enc_map: dict[int, int]) -> str | None:
    prefix = "enc.net_app.convs."
    if key.startswith(prefix):
        idx, rest = key[len(prefix):].split(".", 1)
        j = enc_map.get(int(idx))
        return None if j is None else f"{prefix}{j}.{rest}"
    return key


def transfer_generator(src: Mapping[str, torch.Tensor], src_size: int, model: FixTalk
                       ) -> dict[str, list[str]]:
    """Copy matching generator tensors of ``src`` into ``model``; returns loaded/fresh/skipped keys."""
    dst = model.generator_state_dict()
    enc_map = _encoder_index_map(src_size, model.cfg.size)
    new, loaded, skipped = {}, [], []
    for k, v in src.items():
        t = _map_key(k, enc_map)
        if t is None or t not in dst or tuple(dst[t].shape) != tuple(v.shape):
            skipped.append(k)
            continue
        new[t] = v
        loaded.append(t)
    model.load_state_dict(new, strict=False)
    model._basis.clear()
    fresh = [k for k in dst if k not in new]
    return {"loaded": loaded, "fresh": fresh, "skipped": skipped}


def seed_from_edtalk(model: FixTalk, edtalk_path: PathLike) -> dict[str, list[str]]:
    """Copy EDTalk.pt's generator into ``model`` (any FixTalk config with the file's latent size,
    e.g. a training run's preset with its overrides); returns the loaded/fresh/skipped report."""
    from .checkpoints import _torch_load, config_from_generator, detect_layout

    obj = _torch_load(edtalk_path)
    layout = detect_layout(obj)
    if layout not in ("edtalk", "edtalk_lip_pose"):
        raise ValueError(f"{edtalk_path}: expected EDTalk.pt or EDTalk_lip_pose.pt (key 'gen'), "
                         f"found a {layout} checkpoint")
    src_cfg = config_from_generator(obj["gen"])
    if model.cfg.style_dim != src_cfg.style_dim:
        raise ValueError(f"preset {model.cfg.name} has style_dim {model.cfg.style_dim} but {edtalk_path} has "
                         f"{src_cfg.style_dim}; choose a preset with the checkpoint's latent size")
    report = transfer_generator(obj["gen"], src_cfg.size, model)
    if not report["loaded"]:
        raise ValueError(f"{edtalk_path}: no generator tensor matches preset {model.cfg.name}")
    return report


def init_fixtalk_from_edtalk(edtalk_path: PathLike, preset: str = "fixtalk-512",
                             audio2lip: PathLike | None = None,
                             emotions_dir: PathLike | None = None,
                             device: str | torch.device = "cpu",
                             dtype: torch.dtype = torch.float32) -> FixTalk:
    """A trainable (train-mode) FixTalk seeded from EDTalk.pt; ``model.init_report`` lists the
    loaded and fresh keys. The generator must carry the expression bank unless the preset is not
    a FixTalk/EDTalk variant with one (a lip/pose file leaves the expression parts fresh)."""
    from .checkpoints import _load_audio2lip, load_emotion_weights

    cfg = get_preset(preset)
    model = FixTalk(cfg)
    report = seed_from_edtalk(model, edtalk_path)
    if audio2lip is not None:
        _load_audio2lip(model, audio2lip)
    if emotions_dir is not None:
        model.emotion_weights = load_emotion_weights(emotions_dir, cfg.exp_dim)
    model.init_report = report
    model.training_record = {"init": f"from {os.fspath(edtalk_path)}",
                             "loaded": len(report["loaded"]), "fresh": len(report["fresh"])}
    return model.to(device=device, dtype=dtype).train()
