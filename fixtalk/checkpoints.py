"""Loading and saving checkpoints (EDTalk's public files and the project's own format).

Layouts recognised (every load uses ``torch.load(weights_only=True)``):

* ``EDTalk.pt`` / ``EDTalk_lip_pose.pt``: a dict with ``'gen'`` (the generator state dict; also
  possibly ``'dis'``, ``'g_optim'``, ``'d_optim'``, ``'args'``). The variant and all sizes are read
  from the tensor shapes, so the real files give ``edtalk-256`` / ``edtalk-lip-pose-256``;
* ``Audio2Lip.pt``: a dict with ``'audio2lip'`` (and ``'args'``); pass it as ``audio2lip=``;
* ours: ``{"format": "fixtalk-ckpt/1", "config": dict, "state_dict": ..., "emotion_weights":
  {label: (exp_dim,)}, "training": record}``.

A wrong file raises a ``ValueError`` naming the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .config import AudioConfig, Audio2LipConfig, EDIConfig, EMIConfig, ModelConfig
from .model import EMOTION_LABELS, FixTalk
from .presets import get_preset

FORMAT = "fixtalk-ckpt/1"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "default.pt"
PathLike = str | os.PathLike


# ------------------------------------------------------------------------- key checking
def _fmt(keys: list[str], n: int = 10) -> str:
    head = ", ".join(keys[:n])
    return head + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def check_state_dict(sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                     what: str = "state dict") -> None:
    """Raise ValueError listing missing / unexpected / mis-shaped keys (first 10 of each)."""
    if not isinstance(sd, Mapping):
        raise ValueError(f"{what}: expected a dict of tensors, got {type(sd).__name__}")
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shaped = [f"{k} {tuple(sd[k].shape)} (expected {tuple(expected[k].shape)})"
              for k in expected if k in sd and torch.is_tensor(sd[k])
              and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_fmt(unexpected)}")
        if shaped:
            parts.append(f"{len(shaped)} mis-shaped: {_fmt(shaped)}")
        raise ValueError(f"{what} does not match the model: " + "; ".join(parts))


def check_finite(sd: Mapping[str, torch.Tensor], what: str = "state dict") -> None:
    """Raise ValueError naming the float tensors that hold NaN or Inf (a diverged training run)."""
    bad = [k for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{what}: {len(bad)} tensors contain NaN or Inf: {_fmt(bad)}; expected "
                         "finite weights (use an earlier checkpoint of the run)")


# ------------------------------------------------------------------------- config <-> dict
def config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["channels"] = {int(k): int(v) for k, v in cfg.channels.items()}
    return d


def config_from_dict(d: Mapping[str, Any]) -> ModelConfig:
    d = dict(d)
    subs = {"audio": AudioConfig, "audio2lip": Audio2LipConfig, "emi": EMIConfig, "edi": EDIConfig}
    kw: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    for k, v in d.items():
        if k not in names:
            continue  # fields added by a newer version are ignored
        if k in subs:
            known = {f.name for f in dataclasses.fields(subs[k])}
            v = subs[k](**{a: b for a, b in dict(v).items() if a in known})
        kw[k] = v
    kw["channels"] = {int(k): int(v) for k, v in kw.get("channels", {}).items()}
    if "blur_kernel" in kw:
        kw["blur_kernel"] = tuple(kw["blur_kernel"])
    if "audio2lip" in kw:
        kw["audio2lip"].widths = tuple(kw["audio2lip"].widths)
    return ModelConfig(**kw)


def config_from_generator(gen: Mapping[str, torch.Tensor]) -> ModelConfig:
    """Infer variant and sizes of an EDTalk-layout generator state dict from its shapes."""
    need = ["direction_lipnonlip.weight", "enc.net_app.convs.0.0.weight", "lip_fc.2.weight",
            "pose_fc.2.weight", "dec.input.input"]
    missing = [k for k in need if k not in gen]
    if missing:
        raise ValueError(f"not an EDTalk generator state dict: {len(missing)} missing: "
                         f"{_fmt(missing)} (keys look like {_fmt(sorted(gen)[:5], 5)})")
    has_exp = "direction_exp.weight" in gen
    style_dim = int(gen["direction_lipnonlip.weight"].shape[0])
    n_res = len({k.split(".")[3] for k in gen if k.startswith("enc.net_app.convs.")}) - 2
    size = 4 * 2 ** n_res
    channels = {size: int(gen["enc.net_app.convs.0.0.weight"].shape[0])}
    for j in range(1, n_res + 1):
        channels[size >> j] = int(gen[f"enc.net_app.convs.{j}.conv2.1.weight"].shape[0])
    exp_dim = int(gen["exp_fc.2.weight"].shape[0]) if has_exp else 10
    base = "edtalk-256" if has_exp else "edtalk-lip-pose-256"
    cfg = get_preset(base)
    if (size, style_dim, channels) != (cfg.size, cfg.style_dim, cfg.channels):
        cfg.name = "edtalk-custom"
    cfg.size, cfg.style_dim, cfg.channels = size, style_dim, channels
    cfg.lip_dim = int(gen["lip_fc.2.weight"].shape[0])
    cfg.pose_dim = int(gen["pose_fc.2.weight"].shape[0])
    cfg.exp_dim = exp_dim
    if has_exp:
        cfg.adain_hidden = int(gen["dec.fineadainresblock.0.norm2.mlp_shared.0.weight"].shape[0])
    return cfg


def audio2lip_config(sd: Mapping[str, torch.Tensor]) -> Audio2LipConfig:
    """Conv widths and embedding size of an Audio2Lip state dict."""
    try:
        widths = tuple(int(sd[f"audio_encoder.{i}.conv_block.0.weight"].shape[0])
                       for i in (0, 3, 6, 9, 11))
        embed = int(sd["audio_encoder.12.conv_block.0.weight"].shape[0])
    except KeyError as e:
        raise ValueError(f"not an Audio2Lip state dict: missing {e.args[0]}") from None
    return Audio2LipConfig(widths=widths, embed_dim=embed)


# ------------------------------------------------------------------------- file IO
def _torch_load(path: PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report what the file is not
        raise ValueError(f"{path}: not a loadable torch checkpoint with weights_only=True "
                         f"({type(e).__name__}: {str(e)[:200]})") from e


def detect_layout(obj: Any) -> str:
    """'fixtalk', 'edtalk', 'edtalk_lip_pose', 'audio2lip' or raise."""
    if isinstance(obj, Mapping):
        if obj.get("format") == FORMAT:
            return "fixtalk"
        if isinstance(obj.get("format"), str):
            raise ValueError(f"unsupported checkpoint format {obj['format']!r} (expected {FORMAT})")
        if "gen" in obj and isinstance(obj["gen"], Mapping):
            return "edtalk" if "direction_exp.weight" in obj["gen"] else "edtalk_lip_pose"
        if "audio2lip" in obj and isinstance(obj["audio2lip"], Mapping):
            return "audio2lip"
        keys = list(obj)[:10]
    else:
        keys = []
    raise ValueError("unrecognised checkpoint layout: expected a FixTalk checkpoint "
                     f"(format {FORMAT}), EDTalk.pt / EDTalk_lip_pose.pt (key 'gen') or "
                     f"Audio2Lip.pt (key 'audio2lip'); top-level keys are {keys}")


def load_emotion_weights(folder: PathLike, exp_dim: int = 10) -> dict[str, torch.Tensor]:
    """EDTalk's predefined expression weights: ``{label}.npy`` files of shape (1, exp_dim)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"emotion weights folder not found: {folder}")
    out = {}
    for label in EMOTION_LABELS:
        f = folder / f"{label}.npy"
        if f.is_file():
            a = np.load(f, allow_pickle=False).astype(np.float32).reshape(-1)
            if a.shape != (exp_dim,):
                raise ValueError(f"{f}: expected {exp_dim} expression weights, got {a.size}")
            out[label] = torch.from_numpy(a)
    if not out:
        raise ValueError(f"{folder} holds none of {', '.join(l + '.npy' for l in EMOTION_LABELS)}")
    return out


def _load_audio2lip(model: FixTalk, path: PathLike) -> None:
    obj = _torch_load(path)
    if detect_layout(obj) != "audio2lip":
        raise ValueError(f"{path}: expected an Audio2Lip checkpoint (key 'audio2lip')")
    sd = obj["audio2lip"]
    want = audio2lip_config(sd)
    if want != model.cfg.audio2lip:
        from .nets.audio2lip import Audio2Lip

        model.cfg.audio2lip = want
        model.audio2lip = Audio2Lip(want, model.cfg.lip_dim)
    check_state_dict(sd, model.audio2lip.state_dict(), what=f"{path} ['audio2lip']")
    check_finite(sd, what=f"{path} ['audio2lip']")
    model.audio2lip.load_state_dict(sd)


def load_model(path: PathLike | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, audio2lip: PathLike | None = None,
               emotions_dir: PathLike | None = None) -> FixTalk:
    """Build and load a model in eval mode from any supported checkpoint (None = the default)."""
    if path is None:
        path = DEFAULT_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(
                f"the default model {path} is missing: run `make train-default` to train it, "
                "or pass --checkpoint PATH (a FixTalk checkpoint or EDTalk.pt)")
    obj = _torch_load(path)
    layout = detect_layout(obj)
    if layout == "audio2lip":
        raise ValueError(f"{path} is an Audio2Lip checkpoint; pass it as audio2lip= "
                         "(--audio2lip) together with a generator checkpoint")
    if layout == "fixtalk":
        cfg = config_from_dict(obj["config"])
        model = FixTalk(cfg)
        check_state_dict(obj["state_dict"], model.state_dict(), what=f"{path} ['state_dict']")
        check_finite(obj["state_dict"], what=f"{path} ['state_dict']")
        model.load_state_dict(obj["state_dict"])
        model.emotion_weights = {k: v.float().reshape(-1)
                                 for k, v in (obj.get("emotion_weights") or {}).items()}
        model.training_record = obj.get("training", {})
    else:
        cfg = config_from_generator(obj["gen"])
        model = FixTalk(cfg)
        model.load_generator_state_dict(obj["gen"])
        check_finite(obj["gen"], what=f"{path} ['gen']")
        model.training_record = {"source": f"EDTalk checkpoint {Path(path).name}"}
    if audio2lip is not None:
        _load_audio2lip(model, audio2lip)
    if emotions_dir is not None:
        model.emotion_weights = load_emotion_weights(emotions_dir, cfg.exp_dim)
    model.checkpoint_path = str(path)
    return model.to(device=device, dtype=dtype).eval()


def save_checkpoint(path: PathLike, model: FixTalk, training: dict | None = None,
                    **extra: Any) -> Path:
    """Write our format atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"format": FORMAT, "config": config_to_dict(model.cfg),
           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
           "emotion_weights": {k: v.detach().cpu().float() for k, v in model.emotion_weights.items()},
           "training": dict(training or {}), **extra}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are shared and committed
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def checkpoint_id(path: PathLike | None = None) -> str:
    """Short content hash; ``default-<hash>`` for the shipped default checkpoint."""
    p = Path(path) if path is not None else DEFAULT_CHECKPOINT
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if p.resolve() == DEFAULT_CHECKPOINT.resolve():
        return f"default-{digest[:10]}"
    return digest[:12]


from .transfer import init_fixtalk_from_edtalk, transfer_generator  # noqa: E402  (re-export)

__all__ = ["DEFAULT_CHECKPOINT", "FORMAT", "check_finite", "check_state_dict", "checkpoint_id",
           "config_from_dict", "config_to_dict", "config_from_generator", "detect_layout",
           "init_fixtalk_from_edtalk", "load_emotion_weights", "load_model", "save_checkpoint",
           "transfer_generator"]
